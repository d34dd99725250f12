"""Real time-series data: the vendored files, CSV / gluonts readers, LTSF splits, training windows.

Vendored files (``timeseries/datasets``, gzip of the unchanged originals, see DATA_SOURCES.md):

* ``etth1``      ETTh1.csv, hourly, 17,420 x 7 (+ date). Long-horizon (LTSF) protocol: 12/4/4
                 months train/val/test (8,640 / 2,880 / 2,880 hours), z-scored with training
                 statistics, lookback 336, horizons 96/192/336/720, rolling test windows.
* ``ili``        national_illness.csv, weekly, 966 x 7. LTSF "custom" split 70/10/20 %.
* ``m4_hourly``  M4 hourly, 414 series, the official train / test files, horizon 48.

Everything returned to users is a gluonts dataset (a ``ListDataset`` of entries with ``start``
(``pandas.Period``), ``target`` and ``item_id``) or plain numpy arrays with shapes stated.
Bad input (missing date column, non-numeric values, NaNs, too-short series) raises
:class:`DataError` naming the problem; nothing is silently dropped or filled.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "DataError", "DATASET_DIR", "VENDORED", "dataset_path", "read_csv_frame", "frame_to_gluonts",
    "LTSFData", "load_ltsf", "ltsf_windows", "load_m4_hourly", "series_from_gluonts",
    "normalize_window", "WindowDataset", "pretraining_series", "LTSF_HORIZONS", "M4_HOURLY_HORIZON",
]

DATASET_DIR = Path(__file__).resolve().parent / "datasets"

#: name -> (file(s), frequency) of the vendored data
VENDORED = {
    "etth1": ("ETTh1.csv.gz", "h"),
    "ili": ("national_illness.csv.gz", "W"),
    "m4_hourly": (("M4_Hourly-train.csv.gz", "M4_Hourly-test.csv.gz"), "h"),
}
LTSF_HORIZONS = (96, 192, 336, 720)
M4_HOURLY_HORIZON = 48
#: nominal start of every M4 series (the competition files carry no timestamps)
M4_START = "1750-01-01 00:00"


class DataError(ValueError):
    """Bad time-series input; the message names the file / column / series and the problem."""


def dataset_path(name: str) -> Path | tuple[Path, Path]:
    """Path(s) of a vendored dataset (``etth1``, ``ili``, ``m4_hourly``)."""
    if name not in VENDORED:
        raise DataError(f"unknown dataset {name!r}; vendored datasets: {', '.join(VENDORED)}")
    files = VENDORED[name][0]
    if isinstance(files, tuple):
        return tuple(DATASET_DIR / f for f in files)  # type: ignore[return-value]
    return DATASET_DIR / files


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


# ----------------------------------------------------------------------------------------------
# CSV with a date column


def read_csv_frame(path: str | Path, *, date_column: str = "date", columns: Sequence[str] | None = None,
                   allow_nan: bool = False):
    """Read a CSV (optionally gzip) with a date column into a ``pandas.DataFrame`` indexed by time.

    Args:
        path: CSV file (``.csv`` or ``.csv.gz``).
        date_column: name of the timestamp column (parsed with ``pandas.to_datetime``).
        columns: value columns to keep (default: all but the date column).
        allow_nan: keep NaNs (missing values, later masked by the caller). Default: NaN -> error.
    Returns:
        ``DataFrame [T, C]`` of float64, ``DatetimeIndex`` sorted and unique.
    Raises:
        DataError: missing date column, unparsable dates, duplicate timestamps, non-numeric
        values, NaNs (unless ``allow_nan``), no value columns.
    """
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(io.StringIO(_read_text(path)))
    except DataError:
        raise
    except Exception as e:  # pandas parser errors
        raise DataError(f"{path}: not a readable CSV file: {e}") from None
    if date_column not in df.columns:
        raise DataError(f"{path}: no date column {date_column!r} (columns: {', '.join(map(str, df.columns))}); "
                        f"pass date_column=")
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(df[date_column]))
    except Exception as e:
        raise DataError(f"{path}: column {date_column!r} has values that are not dates: {e}") from None
    vals = df.drop(columns=[date_column])
    if columns is not None:
        missing = [c for c in columns if c not in vals.columns]
        if missing:
            raise DataError(f"{path}: columns {missing} not found (have: {', '.join(map(str, vals.columns))})")
        vals = vals[list(columns)]
    if vals.shape[1] == 0:
        raise DataError(f"{path}: no value columns besides {date_column!r}")
    for c in vals.columns:
        col = pd.to_numeric(vals[c], errors="coerce")
        bad = col.isna() & vals[c].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: column {c!r} has a non-numeric value {vals[c].iloc[i]!r} at row {i + 1}")
        vals[c] = col.astype("float64")
    if not allow_nan and vals.isna().any().any():
        c = vals.columns[vals.isna().any().to_numpy()][0]
        i = int(np.flatnonzero(vals[c].isna().to_numpy())[0])
        raise DataError(f"{path}: column {c!r} has a missing value (NaN) at row {i + 1}; "
                        f"fill it or pass allow_nan=True to keep it as a masked value")
    vals.index = idx
    if idx.has_duplicates:
        raise DataError(f"{path}: duplicate timestamps in {date_column!r}, e.g. {idx[idx.duplicated()][0]}")
    if not idx.is_monotonic_increasing:
        vals = vals.sort_index()
    return vals


def _infer_freq(index, where: str) -> str:
    import pandas as pd

    freq = pd.infer_freq(index) if len(index) >= 3 else None
    if freq is None:
        raise DataError(f"{where}: cannot infer a regular frequency from the dates; pass freq=")
    return freq


def frame_to_gluonts(df, *, freq: str | None = None, multivariate: bool = False, item_prefix: str = "",
                     where: str = "frame"):
    """``DataFrame [T, C]`` (time index) -> gluonts ``ListDataset``.

    Univariate (default): one entry per column, ``item_id = item_prefix + column``,
    ``target: [T]``. Multivariate: one entry with ``target: [C, T]``.
    NaNs stay NaN in ``target`` (gluonts' convention for missing values)."""
    from gluonts.dataset.common import ListDataset

    freq = freq or _infer_freq(df.index, where)
    import pandas as pd

    start = pd.Period(df.index[0], freq=freq)
    values = df.to_numpy(dtype=np.float32)  # [T, C]
    if multivariate:
        return ListDataset([{"start": start, "target": values.T, "item_id": item_prefix or "all"}],
                           freq=freq, one_dim_target=False)
    return ListDataset([{"start": start, "target": values[:, j], "item_id": f"{item_prefix}{c}"}
                        for j, c in enumerate(df.columns)], freq=freq)


# ----------------------------------------------------------------------------------------------
# LTSF protocol (ETT and "custom" datasets)


@dataclass
class LTSFData:
    """A multivariate series under the long-horizon protocol.

    values:  ``[T, C]`` float32, z-scored with training statistics.
    borders: ``{"train": (a, b), "val": (a, b), "test": (a, b)}`` row ranges *including* the
             ``lookback`` rows before val/test (the Informer / Time-Series-Library borders).
    mean, std: ``[C]`` training statistics; ``raw = values * std + mean``.
    """

    name: str
    values: np.ndarray
    columns: list[str]
    index: Any
    freq: str
    borders: dict[str, tuple[int, int]]
    mean: np.ndarray
    std: np.ndarray
    lookback: int
    extra: dict[str, Any] = field(default_factory=dict)

    def split(self, which: str) -> np.ndarray:
        """``[T_split, C]`` rows of one split (val/test include their lookback rows)."""
        a, b = self.borders[which]
        return self.values[a:b]

    def gluonts(self, which: str = "train", *, multivariate: bool = False):
        """One split as a gluonts ``ListDataset`` (z-scored values)."""
        import pandas as pd

        a, b = self.borders[which]
        df = pd.DataFrame(self.values[a:b], index=self.index[a:b], columns=self.columns)
        return frame_to_gluonts(df, freq=self.freq, multivariate=multivariate, item_prefix=f"{self.name}/")


def load_ltsf(name_or_path: str | Path = "etth1", *, lookback: int = 336, date_column: str = "date",
              protocol: str | None = None, freq: str | None = None) -> LTSFData:
    """Load a dataset under the LTSF protocol.

    Args:
        name_or_path: ``"etth1"`` / ``"ili"`` (vendored) or a CSV path with a date column.
        lookback: input length; val/test borders start ``lookback`` rows early.
        protocol: ``"ett_hour"`` (12/4/4 months of hours: 8640/2880/2880 rows) or ``"custom"``
            (70/10/20 %). Default: ``ett_hour`` for ETTh files, else ``custom``.
    Returns:
        :class:`LTSFData`.
    """
    p = Path(name_or_path) if not (isinstance(name_or_path, str) and name_or_path in VENDORED) \
        else dataset_path(name_or_path)
    name = name_or_path if isinstance(name_or_path, str) and name_or_path in VENDORED else Path(p).name.split(".")[0]
    if not Path(p).exists():
        raise DataError(f"{name_or_path}: neither a vendored dataset ({', '.join(VENDORED)}) nor an existing file")
    df = read_csv_frame(p, date_column=date_column)
    T = len(df)
    if protocol is None:
        protocol = "ett_hour" if name.lower().startswith("etth") else "custom"
    if protocol == "ett_hour":
        n_tr, n_va, n_te = 12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24
        if T < n_tr + n_va + n_te:
            raise DataError(f"{p}: {T} rows, the ETT-hour protocol needs at least {n_tr + n_va + n_te}")
        b1 = [0, n_tr - lookback, n_tr + n_va - lookback]
        b2 = [n_tr, n_tr + n_va, n_tr + n_va + n_te]
    elif protocol == "custom":
        n_tr, n_te = int(T * 0.7), int(T * 0.2)
        n_va = T - n_tr - n_te
        b1 = [0, n_tr - lookback, T - n_te - lookback]
        b2 = [n_tr, n_tr + n_va, T]
    else:
        raise DataError(f"unknown protocol {protocol!r}; choose 'ett_hour' or 'custom'")
    if min(b1) < 0:
        raise DataError(f"{p}: {T} rows are too few for lookback {lookback} under the {protocol} protocol")
    raw = df.to_numpy(dtype=np.float64)
    mean = raw[b1[0]:b2[0]].mean(0)
    std = raw[b1[0]:b2[0]].std(0)  # population std, as sklearn StandardScaler
    if (std == 0).any():
        c = df.columns[int(np.flatnonzero(std == 0)[0])]
        raise DataError(f"{p}: column {c!r} is constant on the training split; cannot z-score it")
    values = ((raw - mean) / std).astype(np.float32)
    borders = {k: (a, b) for k, a, b in zip(("train", "val", "test"), b1, b2)}
    return LTSFData(name=name, values=values, columns=list(map(str, df.columns)), index=df.index,
                    freq=freq or _infer_freq(df.index, str(p)), borders=borders, mean=mean, std=std,
                    lookback=lookback, extra={"protocol": protocol})


def ltsf_windows(data: LTSFData, which: str = "test", *, horizon: int = 96, lookback: int | None = None,
                 stride: int = 1, max_windows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rolling windows over one split: ``x: [N, C, lookback]``, ``y: [N, C, horizon]``.

    Window ``i`` starts at row ``i * stride`` of the split (row 0 = the first lookback row);
    ``stride = 1`` gives every window of the standard protocol (2,785 for ETTh1 test, H=96).
    ``max_windows`` keeps the first windows of the (strided) sequence."""
    L = lookback or data.lookback
    if L > data.lookback and which != "train":
        raise DataError(f"lookback {L} exceeds the split's lookback margin {data.lookback}")
    arr = data.split(which)
    if which != "train" and L < data.lookback:
        arr = arr[data.lookback - L:]
    n = arr.shape[0] - L - horizon + 1
    if n <= 0:
        raise DataError(f"split {which!r} ({arr.shape[0]} rows) is too short for lookback {L} + horizon {horizon}")
    starts = np.arange(0, n, stride)
    if max_windows is not None:
        starts = starts[:max_windows]
    idx = starts[:, None] + np.arange(L + horizon)[None, :]  # [N, L+H]
    w = arr[idx]  # [N, L+H, C]
    w = np.ascontiguousarray(w.transpose(0, 2, 1))  # [N, C, L+H]
    return w[:, :, :L], w[:, :, L:]


# ----------------------------------------------------------------------------------------------
# M4 hourly


def _read_m4(path: Path):
    import pandas as pd

    df = pd.read_csv(io.StringIO(_read_text(path)))
    ids = df.iloc[:, 0].astype(str).tolist()
    vals = df.iloc[:, 1:].to_numpy(dtype=np.float64)
    out = []
    for i, row in zip(ids, vals):
        n = int(np.isfinite(row).sum())
        if np.isnan(row[:n]).any():
            raise DataError(f"{path}: series {i} has a gap (NaN inside the series)")
        out.append((i, row[:n].astype(np.float32)))
    return out


def load_m4_hourly(train_path: str | Path | None = None, test_path: str | Path | None = None):
    """The M4 hourly competition data (official train / test files).

    Returns ``(train, test, prediction_length)``: ``train`` a ``ListDataset`` of the 414 training
    series, ``test`` the same series extended by their 48 test values (gluonts' convention: the
    last ``prediction_length`` values of each ``test`` target are to be forecast)."""
    import pandas as pd
    from gluonts.dataset.common import ListDataset

    tp, sp = dataset_path("m4_hourly")
    tr = _read_m4(Path(train_path) if train_path else tp)
    te = dict(_read_m4(Path(test_path) if test_path else sp))
    start = pd.Period(M4_START, freq="h")
    train, test = [], []
    for i, x in tr:
        if i not in te:
            raise DataError(f"M4 test file has no series {i}")
        if len(te[i]) != M4_HOURLY_HORIZON:
            raise DataError(f"M4 test series {i} has {len(te[i])} values, expected {M4_HOURLY_HORIZON}")
        train.append({"start": start, "target": x, "item_id": i})
        test.append({"start": start, "target": np.concatenate([x, te[i]]), "item_id": i})
    return ListDataset(train, freq="h"), ListDataset(test, freq="h"), M4_HOURLY_HORIZON


# ----------------------------------------------------------------------------------------------
# gluonts datasets -> channel-independent series


def series_from_gluonts(dataset: Iterable[dict], *, where: str = "dataset") -> list[np.ndarray]:
    """Channel-independent 1-D float32 series from gluonts entries (univariate ``[T]`` or
    multivariate ``[C, T]`` targets: every row becomes a series). NaNs are kept (masked later)."""
    out = []
    for k, entry in enumerate(dataset):
        if "target" not in entry:
            raise DataError(f"{where}: entry {k} has no 'target'")
        try:
            y = np.asarray(entry["target"], dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{where}: entry {k} ({entry.get('item_id', '?')}) has non-numeric target values") from None
        if y.ndim == 1:
            out.append(y)
        elif y.ndim == 2:
            out.extend(list(y))
        else:
            raise DataError(f"{where}: entry {k} target has shape {y.shape}; expected [T] or [C, T]")
    return out


def normalize_window(x, norm_len: int, eps: float = 1e-5):
    """Per-window normalisation with the statistics of the leading ``norm_len`` points.

    ``x: [..., L]`` (numpy or torch) -> ``(z, mean [..., 1], std [..., 1])`` with
    ``z = (x - mean) / std``; ``std`` is floored at ``eps * (1 + |mean|)`` so flat windows stay
    finite. The leading part is always observed at forecast time, so training and forecasting
    normalise the same way."""
    head = x[..., :norm_len]
    mean = head.mean(-1, keepdims=True) if isinstance(x, np.ndarray) else head.mean(-1, keepdim=True)
    if isinstance(x, np.ndarray):
        std = head.std(-1, keepdims=True)
        std = np.maximum(std, eps * (1 + np.abs(mean)))
    else:
        std = head.std(-1, unbiased=False, keepdim=True)
        std = torch_max(std, eps * (1 + mean.abs()))
    return (x - mean) / std, mean, std


def torch_max(a, b):
    import torch

    return torch.maximum(a, b)


class WindowDataset:
    """Pooled, per-window normalised training windows (a map-style dataset of ``[L]`` tensors).

    Args:
        series: 1-D arrays (channel-independent); windows containing NaN are skipped.
        window: window length ``L``.
        norm_len: leading points used for the normalisation statistics.
        stride: step between window starts within a series.
        max_per_series: keep at most this many windows per series (evenly spaced), so long
            series do not drown short datasets.
    ``__getitem__(i) -> Tensor [L]`` float32; ``tensor()`` -> ``[N, L]``.
    """

    def __init__(self, series: Sequence[np.ndarray], *, window: int, norm_len: int, stride: int = 1,
                 max_per_series: int | None = None, where: str = "training data"):
        import torch

        if window < 2 or not 0 < norm_len <= window:
            raise DataError(f"need window >= 2 and 0 < norm_len <= window, got {window}, {norm_len}")
        chunks = []
        for s in series:
            s = np.asarray(s, dtype=np.float32)
            if s.shape[0] < window:
                continue
            starts = np.arange(0, s.shape[0] - window + 1, stride)
            if max_per_series is not None and starts.size > max_per_series:
                starts = starts[np.linspace(0, starts.size - 1, max_per_series).round().astype(int)]
            w = s[starts[:, None] + np.arange(window)[None, :]]
            w = w[np.isfinite(w).all(1)]
            if w.size:
                chunks.append(w)
        if not chunks:
            longest = max((len(s) for s in series), default=0)
            raise DataError(f"{where}: no series is long enough for window {window} "
                            f"(longest has {longest} points) or all windows contain NaN")
        w = np.concatenate(chunks)
        z, _, _ = normalize_window(w, norm_len)
        self.windows = torch.from_numpy(np.clip(z, -50, 50).astype(np.float32))  # [N, L]

    def __len__(self) -> int:
        return self.windows.shape[0]

    def __getitem__(self, i):
        return self.windows[i]

    def tensor(self):
        return self.windows


def pretraining_series(names: Sequence[str], *, lookback: int = 336) -> list[np.ndarray]:
    """Training series (1-D arrays) of several vendored datasets, training splits only:
    ``etth1`` / ``ili`` LTSF train split (each channel), ``m4_hourly`` the official train file."""
    out: list[np.ndarray] = []
    for n in names:
        n = n.strip().lower()
        if n == "m4_hourly":
            tr, _, _ = load_m4_hourly()
            out += series_from_gluonts(tr, where="m4_hourly")
        elif n in ("etth1", "ili"):
            d = load_ltsf(n, lookback=lookback if n == "etth1" else 36)
            out += list(d.split("train").T)
        else:
            raise DataError(f"unknown training dataset {n!r}; choose from etth1, ili, m4_hourly")
    return out
