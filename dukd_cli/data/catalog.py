"""The data sets dukd can fetch: where each is on the Hub (pinned), how big, and what it must hold.

Every archive is the file of a public Hub dataset at a pinned revision (a full commit id, as the
Hub's pages show it); its SHA-256 is the Hub's LFS metadata where that was looked up, else ``None``
(then the download is not hash-checked, and ``dukd data list`` says so). Nothing here is invented:
an archive whose revision or hash could not be found is left unpinned or unhashed, and said so.

* Set5, Set14, BSD100, Urban100: super-image's ``eugenesiow/<Name>`` datasets,
  ``data/<Name>_HR.tar.gz`` (``<Name>_HR/<image>.png`` inside).
* DIV2K (800 training images) and DIV2K-valid (100): ``goodfellowliu/DIV2K``, the official zips
  (``DIV2K_train_HR.zip`` 3.53 GB, ``DIV2K_valid_HR.zip``; the bicubic LR zips ``DIV2K_train_LR_bicubic_X{s}.zip``).
* Manga109: no public Hub copy was pinned (its licence restricts redistribution); bring it yourself
  (``<dir>/Manga109/HR/``) or give ``dukd data fetch manga109 --source`` a copy you may use.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dukd_cli.errors import DukdError

SET5 = ("baby", "bird", "butterfly", "head", "woman")
SET14 = (
    "baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers",
    "foreman", "lenna", "man", "monarch", "pepper", "ppt3", "zebra",
)  # fmt: skip


@dataclass(frozen=True)
class DataEntry:
    """One fetchable data set."""

    name: str  # canonical name (the folder it lands in, for benchmark sets)
    kind: str  # "bench" (evaluation set) or "train" (training data) or "train-lr" (provided LR of a training set)
    images: int
    source: str | None  # hf://datasets/OWNER/REPO/FILE@REVISION; None: no Hub copy pinned
    sha256: str | None = None  # of the archive, from the Hub's LFS metadata
    size: int | None = None  # bytes, where the Hub's metadata gave an exact figure
    size_text: str = ""  # the size as the Hub page shows it
    scales: tuple[int, ...] = (2, 3, 4)
    names: tuple[str, ...] = ()  # the image names (stems) it must hold, exactly
    pattern: str = ""  # or: a regular expression every stem must match
    aliases: tuple[str, ...] = ()
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def revision(self) -> str | None:
        if not self.source or "@" not in self.source:
            return None
        return self.source.rsplit("@", 1)[1]

    def known_bytes(self) -> int | None:
        """The archive's size in bytes: exact where the Hub gave it, else read from ``size_text``."""
        if self.size:
            return self.size
        m = re.fullmatch(r"([\d.]+)\s*(kB|MB|GB)", self.size_text.strip())
        return int(float(m.group(1)) * {"kB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)]) if m else None

    def size_label(self) -> str:
        if self.size:
            return _human(self.size)
        return self.size_text or "size unknown"


def _human(n: int) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}" if unit == "GB" else f"{n / f:.1f} {unit}"
    return f"{n} B"


_SI = "hf://datasets/eugenesiow"
_DIV2K = "hf://datasets/goodfellowliu/DIV2K"
_DIV2K_REV = "d8a7b7e82add5be32adb51d9442b7932b1739e89"

ENTRIES: tuple[DataEntry, ...] = (
    DataEntry(
        "Set5", "bench", 5, f"{_SI}/Set5/data/Set5_HR.tar.gz@bcb97ac28c8a5f9113825f8d163564e16513f3ed",
        "260fc447296333f6c2716bcd65513968c33b666f21a905537ee3330c51a1945b", None, "852 kB", names=SET5,
    ),
    DataEntry(
        "Set14", "bench", 14, f"{_SI}/Set14/data/Set14_HR.tar.gz@5afcf80d267dba61cdfa9a32b1a6fe4cca57b6d7",
        None, None, "", names=SET14, notes="archive SHA-256 not looked up: not hash-checked",
    ),
    DataEntry(
        "BSD100", "bench", 100, f"{_SI}/BSD100/data/BSD100_HR.tar.gz@8fbc3a31603eba947ea6eba928d31fee0f0c31bb",
        "333495ccded04a0db52b33361140821ea7e0d8af8dfb54b58df79a00010858d6", None, "27.2 MB", pattern=r"\d+",
        aliases=("b100", "bsds100"),
    ),
    DataEntry(
        "Urban100", "bench", 100,
        f"{_SI}/Urban100/data/Urban100_HR.tar.gz@fb0d8a4c6b2471d32bd133de40bb8bb10dde69b9",
        None, None, "135 MB", pattern=r"img_\d{3}", notes="archive SHA-256 not looked up: not hash-checked",
    ),
    DataEntry(
        "DIV2K-valid", "bench", 100, f"{_DIV2K}/DIV2K_valid_HR.zip@{_DIV2K_REV}", None, None, "",
        pattern=r"0(8\d\d|900)", aliases=("div2k_valid", "div2k-val", "div2kvalid"),
        notes="archive SHA-256 not looked up: not hash-checked",
    ),
    DataEntry(
        "Manga109", "bench", 109, None, notes="no public Hub copy pinned (licence): bring your own copy",
    ),
    DataEntry(
        "DIV2K", "train", 800, f"{_DIV2K}/DIV2K_train_HR.zip@{_DIV2K_REV}",
        "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335", 3530603713, pattern=r"0([0-7]\d\d|800)",
        aliases=("div2k-train", "div2k_train"), notes="the paper's training set (800 HR images)",
    ),
    DataEntry(
        "DIV2K-LR-x2", "train-lr", 800, f"{_DIV2K}/DIV2K_train_LR_bicubic_X2.zip@{_DIV2K_REV}",
        "a53a424317575838dadce4bcd97cf7b744d6855f43740ed5f0245af3cf4bd850", 925390592, scales=(2,),
        pattern=r"0([0-7]\d\d|800)x2", notes="DIV2K's official bicubic LR (optional: dukd makes LR itself)",
    ),
    DataEntry(
        "DIV2K-LR-x3", "train-lr", 800, f"{_DIV2K}/DIV2K_train_LR_bicubic_X3.zip@{_DIV2K_REV}",
        "ad5c8e5507e2765823d3c2c5bd0934842efcd487c5370604c224090898b3163a", 427847282, scales=(3,),
        pattern=r"0([0-7]\d\d|800)x3", notes="DIV2K's official bicubic LR (optional: dukd makes LR itself)",
    ),
    DataEntry(
        "DIV2K-LR-x4", "train-lr", 800, f"{_DIV2K}/DIV2K_train_LR_bicubic_X4.zip@{_DIV2K_REV}",
        "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a", 246914039, scales=(4,),
        pattern=r"0([0-7]\d\d|800)x4", notes="DIV2K's official bicubic LR (optional: dukd makes LR itself)",
    ),
)  # fmt: skip

BY_KEY: dict[str, DataEntry] = {}
for _e in ENTRIES:
    for _k in (_e.name, *_e.aliases):
        BY_KEY[_k.lower()] = _e


def get(name: str) -> DataEntry:
    e = BY_KEY.get(name.strip().lower())
    if e is None:
        raise DukdError(
            f"unknown data set '{name}'; known: {', '.join(x.name for x in ENTRIES)} (see 'dukd data list')"
        )
    return e


def datasets_dir() -> Path:
    """Where training sets are fetched to: ``$XDG_CACHE_HOME/dukd/datasets`` (``~/.cache/dukd/datasets``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dukd" / "datasets"


def target_dir(entry: DataEntry) -> Path:
    """The folder a fetched set lands in (the lookup of benchmarks and of ``--data div2k`` finds it there)."""
    from dukd_cli.data.benchmarks import cache_dir

    if entry.kind == "bench":
        return cache_dir() / entry.name
    if entry.kind == "train":
        return datasets_dir() / "DIV2K" / "DIV2K_train_HR"
    return datasets_dir() / "DIV2K" / "DIV2K_train_LR_bicubic" / f"X{entry.scales[0]}"


def check_names(entry: DataEntry, stems: list[str]) -> str | None:
    """Why ``stems`` are not this set's images (count and names), or ``None`` when they are."""
    if len(stems) != entry.images:
        return f"{len(stems)} images where {entry.name} has {entry.images}"
    if entry.names:
        got = {s.lower() for s in stems}
        missing = sorted(set(entry.names) - got)
        if missing:
            return f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
    if entry.pattern:
        bad = [s for s in stems if not re.fullmatch(entry.pattern, s, flags=re.IGNORECASE)]
        if bad:
            return f"unexpected image names {', '.join(sorted(bad)[:3])}{' ...' if len(bad) > 3 else ''}"
    return None
