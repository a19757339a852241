"""The synthetic hospital: realistic, coded, deterministic patient records for demos, tests
and benchmarks."""

from chartkeeper.synth.generate import DEFAULT_AS_OF, GenerateError, Summary, generate

__all__ = ["DEFAULT_AS_OF", "GenerateError", "Summary", "generate"]
