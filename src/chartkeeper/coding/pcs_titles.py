"""ICD-10-PCS long titles: a code's long description built from its labels as CMS writes it."""

from __future__ import annotations

from collections.abc import Sequence

from chartkeeper.coding.pcs_model import Axis

# Long titles. CMS writes each code's long description from its labels; the rules below
# reproduce its phrasing for the Medical and Surgical section (root operation, body part,
# device, approach and qualifier) and a plain "<type> of <body part>" pattern elsewhere.

#: How a root operation opens its title; {body} and {device} are filled in.
_OPERATION_PHRASES = {
    "Bypass": "Bypass {body}", "Change": "Change {device} in {body}",
    "Control": "Control Bleeding in {body}", "Detachment": "Detachment at {body}",
    "Extirpation": "Extirpation of Matter from {body}", "Fragmentation": "Fragmentation in {body}",
    "Insertion": "Insertion of {device} into {body}", "Map": "Map {body}",
    "Release": "Release {body}", "Removal": "Removal of {device} from {body}",
    "Repair": "Repair {body}", "Reposition": "Reposition {body}",
    "Revision": "Revision of {device} in {body}", "Supplement": "Supplement {body}",
    "Transfer": "Transfer {body}",
}
#: Modifiers CMS keeps after the noun ("Thoracic Aorta, Descending"), unlike "Kidney, Right".
_KEPT_MODIFIERS = frozenset({
    "Ascending/Arch", "Descending", "Pylorus", "One Artery", "Two Arteries", "Three Arteries",
    "Four or More Arteries", "Dual Chamber", "Single Chamber", "Single Chamber Rate Responsive",
    "Flow Diverter", "Vertebral Body Tether", "Pneumatic", "Anterior Column", "Posterior Column",
})
#: Devices whose title name is not their label reordered.
_DEVICE_NAMES = {"Cardiac Lead, Pacemaker": "Pacemaker Lead",
                 "Cardiac Lead, Defibrillator": "Defibrillator Lead",
                 "Infusion Device, Pump": "Infusion Pump"}
#: A device label whose modifier is itself the device's name: "Intraluminal Device, Airway".
_NAMED_DEVICE_ENDINGS = ("Airway", "Valve", "Pessary", "Prosthesis", "Telescope")
_COUNTS = frozenset({"Two", "Three", "Four or More"})
#: Axes outside Medical and Surgical whose value says what the procedure used.
_USING_AXES = frozenset({"Device", "Contrast", "Radionuclide", "Method", "Equipment",
                         "Modality Qualifier"})
#: Qualifiers naming the part of the body part that is treated; the title names them instead.
_SUBSITES = frozenset({"Left Atrial Appendage", "Hemorrhoidal Plexus", "Ductus Arteriosus",
                       "Uterine Artery", "Prostatic Artery"})
_CREATED_FROM = frozenset({"Truncal Valve", "Common Atrioventricular Valve"})
#: Qualifiers that describe how the procedure was done, written after the approach.
_AFTER_APPROACH = frozenset({"Diagnostic", "Hand-Assisted", "Vertical", "Ultrasonic"})
_TOOTH_COUNTS = frozenset({"Single", "Multiple", "All"})
#: Qualifiers that narrow the body part, written right after it.
_BODY_MODIFIERS = frozenset({"Bifurcation", "Sesamoid Bone(s) 1st Toe", "Stoma", "Supracervical"})
#: Qualifiers naming a technique: "... using Drug-Coated Balloon".
_TECHNIQUE_ENDINGS = ("Therapy", "Electroporation", "Ablation", "Analysis", "Retriever",
                      "Balloon", "Deployment Technique", "Flap")
_SIDES = frozenset({"Right", "Left", "Bilateral"})


def long_title(axes: Sequence[Axis]) -> str:
    """A code's long title from its seven explained characters."""
    section, body_system, operation, body, approach, device, qualifier = (a.label for a in axes)
    if section != "Medical and Surgical":
        return _other_section_title(axes)
    device_text = None if _is_none(axes[5]) else _device_phrase(device)
    qualifier_text = None if _is_none(axes[6]) else qualifier
    return _medical_surgical_title(operation, body_system, body, device_text,
                                   _approach_phrase(approach), qualifier_text)


def _other_section_title(axes: Sequence[Axis]) -> str:
    """'Introduction of <substance> into <body part>, <approach>', '<type> of <part> using ...'.

    CMS's phrasing outside Medical and Surgical varies by section and is not checked against
    a CMS list here; this is the common shape of its titles.
    """
    operation, body = axes[2].label, axes[3]
    rest = [axis for axis in axes[4:] if not _is_none(axis)]
    substance = next((a for a in rest if "Substance" in a.title), None)
    if operation not in ("Introduction", "Irrigation", "Transfusion"):
        substance = None
    if axes[0].label == "Placement" and rest and rest[-1].title != "Approach":
        # "Removal of Brace on Right Upper Arm": the device is placed on a body region.
        device = next((a for a in rest if a.title == "Device"), None)
        if device is not None:
            return f"{operation} of {device.label} on {_noun_phrase(body.label)}"
    if substance is not None and not _is_none(body):
        text = f"{operation} of {substance.label} into {_noun_phrase(body.label)}"
        rest.remove(substance)
    elif _is_none(body):
        text = operation
    elif body.title == "Qualifier":
        text = f"{operation}, {body.label}"
    else:
        text = f"{operation} of {_noun_phrase(body.label)}"
    approach: list[str] = []
    after: list[str] = []
    for axis in rest:
        if axis.title == "Approach":
            approach.append(_approach_phrase(axis.label))
        elif axis.title == "Function":
            text += f" {axis.label}"
        elif axis.title in _USING_AXES:
            text += f" using {axis.label}"
        else:
            after.append(axis.label)
    return ", ".join([text, *approach, *after])


def _medical_surgical_title(operation: str, body_system: str, body: str, device: str | None,
                            approach: str, qualifier: str | None) -> str:
    body_text = _noun_phrase(body)
    after_approach, qualifier_given = None, qualifier
    if qualifier is not None:
        if qualifier in _SUBSITES or qualifier.split(", ")[0] in _SUBSITES:
            # The qualifier names the part of the body part treated, and the title names it.
            body_text, qualifier = _noun_phrase(qualifier), None
        elif operation == "Bypass":
            flows_from = body.startswith(("Coronary Artery", "Pulmonary Trunk",
                                          "Pulmonary Artery"))
            body_text += f" {'from' if flows_from else 'to'} {_noun_phrase(qualifier)}"
            qualifier = None
        elif operation == "Transfer":
            if qualifier.endswith("Flap"):
                body_text += f", {qualifier}"
            elif "Skin" in qualifier or "Subcutaneous" in qualifier:
                body_text += f" with {qualifier}"
            else:
                body_text += f" to {_noun_phrase(qualifier)}"
            qualifier = None
        elif operation == "Creation":
            if device is not None and "Valve" in qualifier:
                source = _noun_phrase(qualifier)
                return f"Creation of {body_text} from {source} using {device}, {approach}"
            body_text, qualifier = f"{_noun_phrase(qualifier)} in {body_text}", None
        elif qualifier in _CREATED_FROM or qualifier.startswith("Atrioventricular Valve"):
            body_text += f" created from {_noun_phrase(qualifier)}"
            qualifier = None
        elif qualifier in _AFTER_APPROACH or (operation in ("Drainage", "Excision")
                                              and qualifier in _TOOTH_COUNTS):
            after_approach, qualifier = qualifier, None
        elif qualifier == "Biventricular" and device is not None:
            device, qualifier = f"{qualifier} {device}", None
        elif qualifier in _BODY_MODIFIERS or (qualifier in _TOOTH_COUNTS and (
                device is None or operation == "Replacement")):
            body_text += f", {qualifier}" + ("," if device is not None else "")
            qualifier = None
    phrase = _OPERATION_PHRASES.get(operation, operation + " of {body}")
    if operation == "Supplement" and body_system.startswith("Subcutaneous Tissue"):
        phrase = "Supplement of {body}"
    elif operation == "Repair" and qualifier_given in _TOOTH_COUNTS:
        phrase = "Repair of {body}"
    elif operation == "Fragmentation" and body_system.endswith(("Arteries", "Veins")):
        phrase = "Fragmentation of {body}"
    if qualifier is not None and qualifier.endswith("Flap"):
        # The flap is the autologous tissue: CMS names it instead of the device.
        device = None
    opening = phrase.format(body=body_text, device=device or "")
    if device is not None and "{device}" not in phrase:
        opening += f" with {device}"
    parts = [opening]
    if qualifier is not None:
        if qualifier.endswith(_TECHNIQUE_ENDINGS):
            parts[0] += f"{',' if device is not None else ''} using {qualifier}"
        else:
            parts.append(_noun_phrase(qualifier))
    parts.append(approach)
    if after_approach is not None:
        parts.append(after_approach)
    return ", ".join(parts)


def _is_none(axis: Axis) -> bool:
    # "No Device", "No Qualifier", "None": the value Z that names nothing.
    return axis.value == "Z" and (axis.label.startswith("No ") or axis.label == "None")


def _approach_phrase(label: str) -> str:
    return label if label.startswith("Via ") else f"{label} Approach"


def _noun_phrase(label: str) -> str:
    """'Kidney, Right' -> 'Right Kidney'; 'Hip Joint, Femoral Surface, Left' keeps its middle."""
    parts = label.split(", ")
    if len(parts) == 1 or parts[-1] in _KEPT_MODIFIERS:
        return label
    if len(parts) == 2:
        return f"{parts[1]} {parts[0]}"
    if parts[-1] in _SIDES:
        if parts[1].endswith("Surface"):
            return f"{parts[-1]} {', '.join(parts[:-1])}"
        return f"{parts[-1]} {parts[1]} {parts[0]}"
    return label


def _device_phrase(label: str) -> str:
    """'Intraluminal Device, Drug-eluting, Two' -> 'Two Drug-eluting Intraluminal Devices'."""
    if label in _DEVICE_NAMES:
        return _DEVICE_NAMES[label]
    parts = label.split(", ")
    if len(parts) > 1 and parts[-1] in _COUNTS:
        return f"{parts[-1]} {' '.join(reversed(parts[1:-1]))} {parts[0]}s".replace("  ", " ")
    if len(parts) == 2 and parts[1].endswith(_NAMED_DEVICE_ENDINGS):
        return parts[1]
    if len(parts) == 3:
        return f"{parts[1]} {parts[0]}, {parts[2]}"
    return _noun_phrase(label)
