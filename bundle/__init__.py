"""Saliency trust bundle: everything the configs instantiate."""

from bundle import (allocator, console, criteria, data, distributed, errors, findings, handlers, inference, mirror,
                    models, networks, profiles, saliency, study, summary, switches, tracking, trust)

errors.install_excepthook()  # a failed `monai.bundle run` ends with its cause, not MONAI's wrapper
console.quiet_library_noise()  # the libraries' repeated lines, filtered where they arise

console.freeze_imported_objects()  # last: a command returns the prompt when it ends, not 2 s later

__version__ = "0.21.0"
__all__ = [
    "allocator", "console", "criteria", "data", "distributed", "errors", "findings", "handlers", "inference", "mirror",
    "models", "networks", "profiles", "saliency", "study", "summary", "switches", "tracking", "trust",
]
