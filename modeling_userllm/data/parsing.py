"""Readers of raw rating and title files: a `ValueError` names the file, the line and its text at the first
malformed line. pandas' C reader parses; only when it (or a conversion) fails is the file scanned line by
line (`parse_lines`) to locate the problem, so only the error path costs time.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .common import describe_path

Converter = Callable[[str], object]


def missing_raw_files(data_dir: Path, missing: str, builder: str, needs: str, source: str) -> FileNotFoundError:
    """The error of a raw-data folder without `missing`: what `builder` reads (`needs`) and where it comes from."""
    state = f"no {missing} there" if data_dir.is_dir() else "no such folder"
    return FileNotFoundError(f"{describe_path(data_dir)}: {state}. The {builder} builder reads {needs}. {source}")


def INT(text: str) -> int:  # noqa: N802  (the converters read like types)
    value = int(text)
    if value < 0:
        raise ValueError(f"negative id {value}")
    return value


def FLOAT(text: str) -> float:  # noqa: N802
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"non-finite value {text!r}")
    return value


STR = str


def read_text(path: Path, *, header: bool = False, latin1_fallback: bool = False) -> str:
    """A data file's text as UTF-8 (else a `ValueError` naming the line), or latin-1 with `latin1_fallback` (only for
    formats documented so: latin-1 takes any byte). A `ValueError` names the file when it has no data line (nor,
    with `header`, one after its header)."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if not latin1_fallback:
            line_number = raw.count(b"\n", 0, error.start) + 1
            line = raw.splitlines()[line_number - 1]
            raise ValueError(f"{path}: line {line_number}: not valid UTF-8 ({error.reason}): {line!r}") from None
        text = raw.decode("latin-1")
    lines = _data_lines(text)
    if not lines:
        raise ValueError(f"{path}: the file is empty")
    if header and len(lines) == 1:
        raise ValueError(f"{path}: the file holds only its header line ({lines[0][1]!r}), no data")
    return text


def _data_lines(text: str) -> list[tuple[int, str]]:
    """`(line number from 1, line)` of each non-blank line."""
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_lines(path: Path, text: str, parse: Callable[[str], object], *, skip_header: bool = False) -> list:
    """`parse(line)` of each non-blank line; the `ValueError` it raises for a bad line becomes one naming the
    file, the line number, the problem and the line's text."""
    rows = []
    for line_number, line in _data_lines(text)[1 if skip_header else 0 :]:
        try:
            rows.append(parse(line))
        except ValueError as problem:
            raise ValueError(f"{path}: line {line_number}: {problem}: {line!r}") from None
    return rows


def first_bad_line(path: Path, text: str, check: Callable[[str], object], what: str, *,
                   skip_header: bool = False) -> ValueError:
    """The located error of the first line `check` refuses (see `parse_lines`), for a file a fast reader
    could not parse; `what` names the format in the error when every line passes."""
    try:
        parse_lines(path, text, check, skip_header=skip_header)
    except ValueError as error:
        return error
    return ValueError(f"{path}: could not be parsed as {what}")


def line_of_row(path: Path, row: int, *, header: bool = False, quoted: bool = False) -> tuple[int, str]:
    """The 1-based line number and text of data row `row` (0-based; blank lines skipped; a quoted row that spans
    lines: its first) of a file read by `read_table`, for error messages (it rereads the file)."""
    text = read_text(Path(path), latin1_fallback=True)
    if quoted:
        reader = csv.reader(io.StringIO(text))
        start, index = 1, -1 if header else 0
        for fields in reader:
            if fields:
                if index == row:
                    return start, ",".join(fields)
                index += 1
            start = reader.line_num + 1
        raise IndexError(f"{path}: no data row {row}")
    return _data_lines(text)[row + (1 if header else 0)]


def check_scale(path: Path, values: np.ndarray, low: float, high: float, *, step: float | None = None,
                field: str = "rating", header: bool = False) -> None:
    """A `ValueError` naming the file, line, field, value and scale at the first of a file's `(num_rows,)` column
    `values` outside `[low, high]` or off the `step` grid from `low` (None: any); `header` as read."""
    values = np.asarray(values, dtype=np.float64)
    bad = (values < low) | (values > high)
    if step is not None:
        bad |= np.abs((values - low) / step - np.round((values - low) / step)) > 1e-6
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    line_number, line = line_of_row(path, row, header=header)
    scale = f"{low:g}-{high:g}" + (f" in steps of {step:g}" if step is not None else "")
    raise ValueError(f"{path}: line {line_number}: {field} {values[row]:g} is outside the data set's scale {scale} "
                     f"({int(bad.sum())} such rows in the file): {line!r}")


def check_unique_ids(path: Path, ids: pd.Series, *, header: bool = False, quoted: bool = False, field: str = "id") -> None:
    """A `ValueError` naming the file, the id, its first two lines and the repeats when an item table's id
    column `ids` (in file order; `header`/`quoted` as read) holds an id twice."""
    ids = ids.astype(str).str.strip().reset_index(drop=True)
    repeated = ids.duplicated(keep=False)
    if not repeated.any():
        return
    first_id = ids[repeated].iloc[0]
    rows = ids.index[ids == first_id][:2]
    lines = [line_of_row(path, int(row), header=header, quoted=quoted)[0] for row in rows]
    extra = int(ids.duplicated().sum())
    raise ValueError(f"{path}: {field} {first_id} appears on lines {lines[0]} and {lines[1]} "
                     f"({extra} repeated {field}s in the file); an item table needs one line per {field}")


def read_table(path: Path, sep: str, converters: dict[str, Converter], *, header: bool = False, quoted: bool = False,
               latin1_fallback: bool = False) -> pd.DataFrame:
    """A delimited file whose every line has exactly the typed fields `converters` (name -> `INT`, `FLOAT` or
    `STR`, in file order), as a frame (INT int64, FLOAT float64, STR str); `header`: skip the first line;
    `quoted`: CSV quoting. A `ValueError` names the file, the line and its text at the first bad line."""
    path = Path(path)
    text = read_text(path, header=header, latin1_fallback=latin1_fallback)
    names = list(converters)

    def check(line: str) -> None:
        fields = next(csv.reader([line])) if quoted else line.split(sep)
        if len(fields) != len(names):
            raise ValueError(f"expected {len(names)} fields ({', '.join(names)}), got {len(fields)}")
        for (name, convert), field in zip(converters.items(), fields):
            try:
                convert(field.strip())
            except (ValueError, TypeError):
                raise ValueError(f"bad {name} {field!r}") from None

    def bad_line() -> ValueError:
        return first_bad_line(path, text, check, f"{sep!r}-separated {names}", skip_header=header)

    try:
        with warnings.catch_warnings():
            # A first line with extra fields only warns (data loss) unless made an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), sep=sep, header=0 if header else None, names=names, index_col=False,
                                dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
                                engine="c", skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
        raise bad_line() from None
    for name, convert in converters.items():
        if convert is STR:
            continue
        values = pd.to_numeric(frame[name].str.strip(), errors="coerce").to_numpy(dtype="float64")
        if not np.isfinite(values).all() or (convert is INT and ((values < 0).any() or (values % 1 != 0).any())):
            raise bad_line()
        frame[name] = values.astype("int64") if convert is INT else values
    return frame


def read_csv_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """The `columns` of a headed, quoted CSV (e.g. TMDB metadata) as str, missing cells ""; a `ValueError`
    naming the file when it cannot be parsed or lacks a column."""
    text = read_text(Path(path), header=True)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as error:
        raise ValueError(f"{path}: not a valid CSV file: {error}") from None
    if missing := [column for column in columns if column not in frame.columns]:
        raise ValueError(f"{path}: missing columns {missing}; has {list(frame.columns)}")
    return frame[columns]


def poster_paths(folder: Path | None, file_names: list[list[str]]) -> tuple[list[str | None], int]:
    """The absolute path of each item's poster among its candidate `file_names` in `folder` (in preference order;
    None: no readable one), and the number of items without one. A file that is no readable image is not a
    poster: a warning counts them and names the first few."""
    if folder is None or not Path(folder).is_dir():
        return [None] * len(file_names), len(file_names)
    folder = Path(folder).resolve()
    present = {entry.name for entry in folder.iterdir()}
    corrupt: list[str] = []

    def readable(name: str) -> bool:
        if name in present and not is_readable_image(folder / name):
            corrupt.append(name)
            return False
        return name in present

    paths = [next((str(folder / name) for name in candidates if readable(name)), None) for candidates in file_names]
    if corrupt:
        shown = ", ".join(corrupt[:5]) + (", ..." if len(corrupt) > 5 else "")
        warnings.warn(f"{folder}: {len(corrupt)} poster files cannot be read as images (or are larger than "
                      f"processing_userllm.MAX_POSTER_PIXELS) and are not counted as posters: {shown}", stacklevel=2)
    return paths, sum(path is None for path in paths)


def is_readable_image(path: Path) -> bool:
    """Whether `open_poster` reads the file whole (a truncated JPEG passes PIL's `verify`, not this) within the limit."""
    from ..processing_userllm import open_poster

    try:
        open_poster(path, "poster")
    except ValueError:
        return False
    return True
