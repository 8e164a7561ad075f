"""Fetch a data set and lay it out where the trainer looks for it, then verify what was laid out.

    python -m asgl.train.data.prepare NAME [--root DIR]

``DIR`` defaults to ``./data/<NAME>`` (of the working directory), the folder ``data.source=auto``
reads first.

| NAME | how |
|---|---|
| cifar10, cifar100, tiny_imagenet | the parquet files of the hub copy (``uoft-cs/cifar10``, ``uoft-cs/cifar100``, ``zh-plus/tiny-imagenet``) through ``huggingface_hub.snapshot_download`` (its cache, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` respected) |
| shd | ``shd_train.h5.gz`` / ``shd_test.h5.gz`` from https://zenkelab.org/datasets/, unpacked |
| digits | bundled in the repository (``data/digits``); written by ``asgl.train.data.make_digits`` if missing (needs the ``digits`` extra: scikit-learn) |
| cifar10_dvs, dvs128_gesture, medley_solos | behind download pages: the exact manual steps are printed |

Verification reads what the trainer reads (the loaders' own file discovery, row counts and
columns of parquet files, the HDF5 datasets of SHD) and prints one line per split. Files already in
place are verified, not fetched again.

Exit codes: 0 laid out and verified; 1 the download failed, the files do not verify, the data
set needs the manual steps printed, or a package it needs is missing (the line names its extra);
2 bad command line.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # a file run from a clone: the repository root, not this folder (README, "From a clone")
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parents[1]))

from asgl.extras import MissingExtra, need
from asgl.train.data import DATASETS, DataConfig, _root
from asgl.train.data.loader import DataFormatError, DataNotFoundError

SHD_URL = "https://zenkelab.org/datasets"
WHAT = "python -m asgl.train.data.prepare"

MANUAL = {
    "cifar10_dvs": """CIFAR10-DVS is distributed as one zip per class on figshare (CC BY 4.0):
  1. Download the 10 zips from https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671
     (airplane.zip, automobile.zip, bird.zip, cat.zip, deer.zip, dog.zip, frog.zip, horse.zip,
     ship.zip, truck.zip).
  2. Unzip each into its own folder:  mkdir -p {root} && for c in airplane automobile bird cat deer dog frog horse ship truck; do unzip -q $c.zip -d {root}/$c; done
     so that {root}/airplane/cifar10_airplane_0.aedat ... exist (1,000 AEDAT 2.0 files per class;
     move them up a level if the zip holds a folder of its own).
  3. Check:  python -m asgl.train.data.prepare cifar10_dvs --root {root}""",
    "dvs128_gesture": """DVS128 Gesture is distributed by IBM (CC BY 4.0):
  1. Download DvsGesture.tar.gz from https://research.ibm.com/dvsgesture/ (an IBM Box link).
  2. Extract it:  mkdir -p {root} && tar -xzf DvsGesture.tar.gz -C {root} --strip-components=1
     so that {root}/trials_to_train.txt, {root}/trials_to_test.txt, {root}/user01_fluorescent.aedat
     and {root}/user01_fluorescent_labels.csv exist.
  3. Check:  python -m asgl.train.data.prepare dvs128_gesture --root {root}""",
    "medley_solos": """Medley-solos-DB is distributed on Zenodo (CC BY 4.0):
  1. Download Medley-solos-DB.tar.gz and Medley-solos-DB_metadata.csv from https://zenodo.org/records/3464194
  2. Extract and place the metadata:  mkdir -p {root} && tar -xzf Medley-solos-DB.tar.gz -C {root} && cp Medley-solos-DB_metadata.csv {root}/
  3. Check:  python -m asgl.train.data.prepare medley_solos --root {root}""",
}


class PrepareError(RuntimeError):
    """A download or verification failed; the message says what and what to do."""


def verify(name: str, root: Path) -> list[str]:
    """One line per split describing what the trainer will read from ``root``; raises
    :class:`DataNotFoundError` / :class:`DataFormatError` when it would not load."""
    from asgl.train.data import IMAGE_DATASETS

    if name in IMAGE_DATASETS:
        pq = need("pyarrow.parquet", f"{WHAT} {name}")

        from asgl.train.data import images

        source = images.resolve_source(name, str(root), None, None)
        lines = []
        for split, files in source.files.items():
            rows = 0
            for f in files:
                schema = pq.ParquetFile(f).schema_arrow
                absent = [c for c in (source.spec.image_column, source.label_column) if c not in schema.names]
                if absent:
                    raise DataFormatError(f"{f}: missing column(s) {absent}; found {schema.names}")
                rows += pq.ParquetFile(f).metadata.num_rows
            if rows == 0:
                raise DataFormatError(f"{name} {split}: {len(files)} file(s) but no rows")
            lines.append(f"{split}: {rows:,} images in {len(files)} parquet file(s)")
        return lines
    if name == "shd":
        h5py = need("h5py", f"{WHAT} shd")

        from asgl.train.data import shd

        lines = []
        for split, path in shd.shd_files(root).items():
            try:
                with h5py.File(path, "r") as f:
                    n = len(f["labels"])
                    if len(f["spikes/times"]) != n or len(f["spikes/units"]) != n:
                        raise DataFormatError(f"{path}: spikes/times, spikes/units and labels differ in length")
            except (OSError, KeyError) as e:
                raise DataFormatError(f"{path}: not an SHD file ({e})") from None
            lines.append(f"{split}: {n:,} samples in {path.name}")
        return lines
    if name == "cifar10_dvs":
        from asgl.train.data import events

        files = events.cifar10_dvs_files(root, 0)
        return [f"{split}: {len(items):,} recordings (seeded 9:1 split)" for split, items in files.items()]
    if name == "dvs128_gesture":
        from asgl.train.data import events

        return [f"{split}: {len(items):,} gesture samples" for split, items in events.gesture_samples(root).items()]
    from asgl.train.data import audio

    return [f"{split}: {len(items):,} clips" for split, items in audio.medley_files(root).items()]


def fetch_hub(name: str, root: Path) -> None:
    """The parquet files of the data set's hub copy into ``root``, in the hub's layout."""
    hub = need("huggingface_hub", f"{WHAT} {name}")

    from asgl.train.data import images

    spec = images.IMAGE_SPECS[name]
    try:
        hub.snapshot_download(spec.hub_id, repo_type="dataset", local_dir=str(root),
                          allow_patterns=list(spec.patterns.values()))
    except Exception as e:  # offline, no route, a gated repo: all mean "not fetched"
        raise PrepareError(f"could not download {spec.hub_id} from the Hugging Face hub "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}).\n"
                           f"Needs the network (and HF_HUB_OFFLINE unset). Elsewhere, run this command on a "
                           f"machine with access and copy {root} here.") from None


def fetch_shd(root: Path, base_url: str = SHD_URL) -> None:
    """``shd_train.h5`` / ``shd_test.h5`` into ``root``, each downloaded gzipped and unpacked atomically."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        target = root / f"shd_{split}.h5"
        if target.exists():
            continue
        url = f"{base_url}/shd_{split}.h5.gz"
        with tempfile.NamedTemporaryFile(dir=root, prefix=f".shd_{split}.", suffix=".tmp", delete=False) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as response, gzip.GzipFile(fileobj=response) as gz:
                    shutil.copyfileobj(gz, tmp, length=1 << 20)
            except (OSError, EOFError) as e:
                Path(tmp.name).unlink(missing_ok=True)
                raise PrepareError(f"could not download {url} ({type(e).__name__}: {e}).\n"
                                   f"Get it by hand:  wget {url} && gunzip -c shd_{split}.h5.gz > {target}") from None
        Path(tmp.name).replace(target)


def fetch_digits(root: Path) -> None:
    """The digits data set written into ``root`` from scikit-learn's copy (the module ships inside the package)."""
    from asgl.train.data.make_digits import write_digits

    write_digits(root)


def prepare(name: str, root: Path) -> list[str]:
    """Lay out ``name`` in ``root`` if it is not there yet, and verify it (see the module docstring)."""
    try:
        return verify(name, root)
    except DataNotFoundError:
        pass
    if name in MANUAL:
        raise PrepareError(f"{name} cannot be downloaded automatically. {MANUAL[name].format(root=root)}")
    if name == "shd":
        fetch_shd(root)
    elif name == "digits":
        fetch_digits(root)
    else:
        fetch_hub(name, root)
    return verify(name, root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asgl.train.data.prepare",
                                     description="Fetch a data set, lay it out for the trainer and verify it.")
    parser.add_argument("name", choices=DATASETS, help="the data set (data.name)")
    parser.add_argument("--root", help="where to lay it out (data.root); default ./data/NAME")
    args = parser.parse_args(argv)
    root = Path(args.root) if args.root else _root(DataConfig(name=args.name))
    try:
        lines = prepare(args.name, root)
    except (PrepareError, DataNotFoundError, DataFormatError, MissingExtra) as e:
        print(f"error: {args.name}: {e}", file=sys.stderr)
        return 1
    print(f"{args.name} in {root}: " + " | ".join(lines))
    print(f"ready: python train/run.py --config ... --data.name={args.name}"
          + ("" if args.root is None else f" --data.root={root}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
