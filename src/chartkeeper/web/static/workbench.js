// Keyboard: "/" goes to the patient search from anywhere but a text field.
document.addEventListener("keydown", (event) => {
  const tag = (event.target.tagName || "").toLowerCase();
  if (event.key === "/" && !["input", "textarea", "select"].includes(tag)) {
    const q = document.getElementById("q");
    event.preventDefault();
    if (q) { q.focus(); q.select(); } else { window.location.href = "/patients"; }
  }
});
