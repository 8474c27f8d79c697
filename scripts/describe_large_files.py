"""Write ``large_files.yml`` (the Model Zoo's description of files over its 25 MB limit): every checkpoint the
default study trains, with its path, its SHA-256 and, when the files are uploaded, its URL.

Checkpoints are outputs the bundle trains when they are missing, so they are never tracked; at a release the
maintainer trains them, uploads them and runs this script on them. ``torch.save`` writes a random serialization id
into every file, so a retrained checkpoint has another hash even where its weights are bit-identical: a hash
identifies one uploaded file, not a training.

    python scripts/describe_large_files.py --models models --url-base https://example.org/saliency_trust/0.9.0/
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from monai.bundle import ConfigParser

from bundle.saliency.cache import file_digest

ROOT = Path(__file__).resolve().parents[1]
HEADER = (
    "Files over the Model Zoo's 25 MB limit: the checkpoints of the default study (configs/evaluate.json), which "
    "the bundle trains from scratch when they are missing; url is empty until the files are uploaded with a release. "
    "Written by scripts/describe_large_files.py from the files of one training: {origin}."
)


def default_checkpoints(config: Path = ROOT / "configs" / "evaluate.json") -> list[str]:
    """Paths (relative to the bundle root) of every checkpoint the default study needs: the model under study, then
    the models its criteria compare with, as ``SaliencyStudy.required_models`` orders them."""
    from bundle.models import ModelSpec

    parser = ConfigParser()
    parser.read_config(str(config))
    primary = ModelSpec(parser.get_parsed_content("network_name"), parser.get_parsed_content("seed"))
    criteria = parser.get_parsed_content("criteria")
    specs = dict.fromkeys([primary] + [s for c in criteria.values() for s in c.models(primary)])
    return [f"models/{spec.checkpoint('').name}" for spec in specs]


def describe(models: Path, url_base: str = "", origin: str = "") -> str:
    """The YAML text describing the default checkpoints found in ``models`` (each must be there)."""
    lines = [f"# {line}" for line in textwrap.wrap(HEADER.format(origin=origin or "unstated"), 110)] + ["large_files:"]
    for path in default_checkpoints():
        found = models / Path(path).name
        if not found.is_file():
            raise FileNotFoundError(f"{found}: missing; train the default models first (python -m monai.bundle run "
                                    "evaluate --config_file configs/evaluate.json trains every missing one)")
        url = url_base + Path(path).name if url_base else ""
        lines += [f'  - path: "{path}"', f'    url: "{url}"', f'    hash_val: "{file_digest(found)}"',
                  '    hash_type: "sha256"']
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--url-base", default="", help="where the files are uploaded (empty: not yet)")
    parser.add_argument("--origin", default="", help="where and when the files were trained, for the header")
    parser.add_argument("--out", type=Path, default=ROOT / "large_files.yml")
    args = parser.parse_args()
    args.out.write_text(describe(args.models, args.url_base, args.origin))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
