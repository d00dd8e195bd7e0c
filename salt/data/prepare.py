"""Prepare a video collection once for training: `python -m salt prepare-videos LIST OUT_DIR` (docs/data.md).

Raw collections are slow to sample: a training clip needs the frames from the keyframe before it, and cameras and
web videos put keyframes 250 frames or more apart at sizes far above the 224 px the model sees. Re-encoding every
file once (short side 256, a keyframe every 16 frames, long videos cut into chunks) makes each later clip decode a
few small frames instead of hundreds of large ones. This module is the per-file work (PyAV + numpy) and the folder
around it; the SLURM dispatch lives in salt.study.prepare (salt.data never imports salt.study).

OUT_DIR holds:
  videos/<stem>-<hash>[_cNNN].mp4   H.264 (yuv420p, closed GOPs, no audio); _cNNN when --chunk-seconds is set
  .prepare/<hash>.json              one record per input (done or failed: chunks, frames, seconds, bytes, reason)
  .prepare/options.json             the list and options the folder was made with (another set is refused)
  <list name>                       the new list (same name and separator as the input), written at the end
  report.json                       failures with reasons, unfinished inputs, totals
Every file is written atomically (salt.io), an input's record last, so a killed preparation redoes only the
inputs without a record, and a rerun of a finished folder does nothing. Encoding is deterministic (one x264 and
one swscale thread per file, bit-exact scaling; parallelism comes from running files side by side): a rerun, a
resumed run and a SLURM array give byte-identical files on one FFmpeg build.
"""
from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
from av.video.frame import PictureType
from av.video.reformatter import Interpolation

from salt.data.video.decode import DECODE_ERRORS, UnreadableVideoError, video_stream
from salt.data.video.lists import VideoEntry, read_video_list
from salt.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from salt.layout import PrepareLayout

RECORD_VERSION = 1
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
# bit-exact scaling: the same pixels whatever SIMD a node has, so SLURM nodes of different CPUs agree byte for byte
SCALING = Interpolation.BICUBIC | Interpolation.BITEXACT | Interpolation.ACCURATE_RND


@dataclass(frozen=True)
class PrepareOptions:
    """How every file is re-encoded; recorded in OUT_DIR/.prepare/options.json."""

    short_side: int = 256  # scale so the short side is this (never up); even, as yuv420p needs even sizes
    gop: int = 16  # frames between keyframes (closed GOPs): a clip decodes at most gop - 1 frames before its own
    chunk_seconds: float = 10.0  # cut longer videos into chunks of about this length; 0 = one file per video
    max_fps: float = 0.0  # drop frames down to at most this rate; 0 = keep the rate
    crf: int = 23  # x264 quality: its default, far finer than a 224 px crop of a 256 px frame can show
    preset: str = "veryfast"  # x264 speed: several times faster than medium for ~10% larger files

    def __post_init__(self) -> None:
        if self.short_side < 2 or self.short_side % 2:
            raise ValueError(f"--short-side must be an even number >= 2 (yuv420p), got {self.short_side}")
        if self.gop < 1:
            raise ValueError(f"--gop must be >= 1, got {self.gop}")
        if self.chunk_seconds < 0 or self.max_fps < 0 or not (math.isfinite(self.chunk_seconds)
                                                               and math.isfinite(self.max_fps)):
            raise ValueError(f"--chunk-seconds and --max-fps must be finite and >= 0, got {self.chunk_seconds} "
                             f"and {self.max_fps}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"--crf must be in 0..51 (x264), got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")


# ---------------------------------------------------------------- one input


@dataclass(frozen=True)
class _Source:
    """What the plan of an input needs, from one demuxing pass (packets counted, nothing decoded)."""

    width: int
    height: int
    rate: Fraction  # the input's frame rate
    frames: int  # packets that give a frame


def _probe(path: str) -> _Source:
    with av.open(path) as container:
        stream = video_stream(container)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        width, height = stream.codec_context.width, stream.codec_context.height
        frames = sum(1 for packet in container.demux(stream) if packet.size and not packet.is_discard)
    if not rate or rate <= 0:
        raise UnreadableVideoError("no frame rate in the header")
    if not (width and height):
        raise UnreadableVideoError("no frame size in the header")
    if frames == 0:
        raise UnreadableVideoError("no video frames")
    return _Source(width, height, Fraction(rate), frames)


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Scaled so the short side is `short_side`, never up, each side rounded down to even (yuv420p)."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def output_rate(rate: Fraction, max_fps: float) -> Fraction:
    if max_fps and rate > max_fps:
        return Fraction(max_fps).limit_denominator(1001)
    return rate


def kept_frames(rate: Fraction, out_rate: Fraction) -> Iterator[int]:
    """Input frame indices kept at `out_rate`: output frame j is the first input frame at or after time j / out_rate
    (frame i at i / rate), so a 30 -> 25 fps cap drops one frame in six, evenly."""
    for j in itertools.count():
        yield math.ceil(j * rate / out_rate)


def chunk_lengths(total: int, per_chunk: int) -> list[int]:
    """Frames per chunk: `per_chunk` each, a tail shorter than half a chunk joined to the chunk before it
    (per_chunk 0: one chunk)."""
    if not per_chunk or total <= per_chunk:
        return [total]
    full, tail = divmod(total, per_chunk)
    lengths = [per_chunk] * full
    if 2 * tail >= per_chunk:
        lengths.append(tail)
    else:
        lengths[-1] += tail
    return lengths


def _output_frames(path: str, source: _Source, out_rate: Fraction, size: tuple[int, int]
                   ) -> Iterator[av.VideoFrame]:
    """The kept frames, decoded in order (one thread) and scaled to `size` as yuv420p."""
    wanted = kept_frames(source.rate, out_rate)
    next_wanted = next(wanted)
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(container.decode(stream)):
            if index < next_wanted:
                continue
            next_wanted = next(wanted)
            scaled = frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation=SCALING)
            scaled.pict_type = PictureType.NONE  # a decoded frame's type would force x264's frame types
            yield scaled


def _encode(file: IO[bytes], frames: Iterable[av.VideoFrame], size: tuple[int, int], rate: Fraction,
            options: PrepareOptions) -> int:
    """H.264 in mp4 from `frames` (timestamps 0, 1, ... at `rate`); returns the frame count."""
    count = 0
    with av.open(file, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.thread_count = 1  # x264's threads change its output; parallelism is across files
        # scenecut=0: keyframes exactly every gop frames, so every clip costs the same to seek to. mbtree=0: x264's
        # macroblock-tree pass (its SIMD code) gave different bytes from run to run when a decoder ran beside it in
        # the process (PyAV 18's FFmpeg; asm=0 or mbtree=0 fixed it): reproducible files are worth its few percent
        options_x264 = "scenecut=0:open-gop=0:mbtree=0"
        stream.options = {"crf": str(options.crf), "preset": options.preset, "g": str(options.gop),
                          "keyint_min": str(options.gop), "x264-params": options_x264}
        for count, frame in enumerate(frames, start=1):
            frame.pts, frame.time_base = count - 1, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return count


def _write_chunk(path: Path, frames: Iterable[av.VideoFrame], size: tuple[int, int], rate: Fraction,
                 options: PrepareOptions) -> int:
    counts = []
    atomic_write_bytes(path, lambda file: counts.append(_encode(file, frames, size, rate, options)))
    return counts[0]


def _encode_input(path: str, layout: PrepareLayout, options: PrepareOptions) -> dict:
    source = _probe(path)
    size = output_size(source.width, source.height, options.short_side)
    rate = output_rate(source.rate, options.max_fps)
    kept = sum(1 for _ in itertools.takewhile(lambda i: i < source.frames, kept_frames(source.rate, rate)))
    per_chunk = max(1, round(options.chunk_seconds * rate)) if options.chunk_seconds else 0
    lengths = chunk_lengths(kept, per_chunk)
    frames = _output_frames(path, source, rate, size)
    chunks = []
    try:
        for index, length in enumerate(lengths):
            first = next(frames, None)
            if first is None:  # the stream gave fewer frames than it has packets
                break
            last = index == len(lengths) - 1  # the last chunk takes whatever the decoder still gives
            part = itertools.chain([first], frames if last else itertools.islice(frames, length - 1))
            file = layout.chunk(path, index if per_chunk else None)
            count = _write_chunk(file, part, size, rate, options)
            chunks.append({"file": file.relative_to(layout.root).as_posix(), "frames": count,
                           "seconds": round(float(count / rate), 3), "bytes": file.stat().st_size})
    finally:
        frames.close()
    if not chunks:
        raise UnreadableVideoError("no decodable video frames")
    return {"status": "done", "reason": "", "chunks": chunks, "width": size[0], "height": size[1],
            "fps": float(rate), "frames": sum(c["frames"] for c in chunks),
            "seconds": round(float(sum(c["frames"] for c in chunks) / rate), 3),
            "bytes_in": os.path.getsize(path), "bytes_out": sum(c["bytes"] for c in chunks)}


def prepare_input(path: str, layout: PrepareLayout, options: PrepareOptions) -> dict:
    """Re-encode one input and write its record (last, atomically); an undecodable input gets a failed record
    with the reason and its partial chunks removed. Anything else raised is a bug here and surfaces."""
    started = time.perf_counter()
    try:
        record = _encode_input(path, layout, options)
    except DECODE_ERRORS as error:
        for partial in layout.chunks_of(path):
            partial.unlink(missing_ok=True)
        record = {"status": "failed", "reason": f"{type(error).__name__}: {error}", "chunks": [], "frames": 0,
                  "seconds": 0.0, "bytes_in": os.path.getsize(path) if os.path.isfile(path) else 0, "bytes_out": 0}
    record = {"version": RECORD_VERSION, "input": os.path.abspath(path), **record,
              "encode_s": round(time.perf_counter() - started, 2)}
    atomic_write_json(layout.record(path), record)
    return record


def read_record(layout: PrepareLayout, source: str) -> dict | None:
    """The input's record when it is finished: failed, or done with every chunk file present."""
    path = layout.record(source)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record["version"] > RECORD_VERSION:
        raise ValueError(f"{path} has record version {record['version']}; this salt reads up to {RECORD_VERSION}")
    if record["status"] == "done" and not all((layout.root / c["file"]).is_file() for c in record["chunks"]):
        return None
    return record


def _prepare_task(task: tuple[str, PrepareLayout, PrepareOptions]) -> str:
    prepare_input(*task)
    return task[0]


def prepare_inputs(paths: list[str], out_dir: str | Path, options: PrepareOptions, workers: int) -> None:
    """Prepare `paths` (those without a record yet) with `workers` processes; one worker works in this process.
    What a SLURM array task runs for its shard, too."""
    layout = PrepareLayout(Path(out_dir))
    tasks = [(path, layout, options) for path in paths if read_record(layout, path) is None]
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            _prepare_task(task)
        return
    # forkserver: workers start clean (no inherited threads of the caller, e.g. torch's) and stay for every file
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        for _ in pool.map(_prepare_task, tasks):
            pass


# ---------------------------------------------------------------- the collection


@dataclass
class Preparation:
    """A list being prepared into OUT_DIR: its entries, the distinct inputs, and OUT_DIR's lock while open."""

    list_path: Path
    layout: PrepareLayout
    options: PrepareOptions
    entries: list[VideoEntry]
    inputs: list[str]  # distinct input paths, in list order
    lock: IO[str] | None = None

    def pending(self, retry_failed: bool) -> list[str]:
        """Inputs without a record (or, with retry_failed, with a failed one): the work left."""
        left = []
        for source in self.inputs:
            record = read_record(self.layout, source)
            if record is None or (retry_failed and record["status"] == "failed"):
                left.append(source)
        return left

    def __enter__(self) -> Preparation:
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.close()  # releases the flock


def open_preparation(list_path: str | Path, out_dir: str | Path, options: PrepareOptions) -> Preparation:
    """Check everything before any work: the list parses, OUT_DIR is not the list's folder, no other preparation
    runs in it, and OUT_DIR was made (if at all) from this list with these options. Then take OUT_DIR's lock,
    record the options and remove temporary files a killed run left."""
    list_path, layout = Path(list_path).resolve(), PrepareLayout(Path(out_dir).resolve())
    entries = read_video_list(str(list_path))
    if layout.root == list_path.parent:
        raise ValueError(f"OUT_DIR {out_dir} is the folder of {list_path}: the new list would replace it; give "
                         "another folder")
    wanted = {"version": RECORD_VERSION, "list": str(list_path), "options": dataclasses.asdict(options)}
    if layout.options.is_file():
        made = json.loads(layout.options.read_text())
        if made != wanted:
            raise ValueError(f"{layout.root} was prepared with {_differences(made, wanted)}: prepare into another "
                             "folder (or delete this one)")
    layout.state.mkdir(parents=True, exist_ok=True)
    lock = open(layout.lock, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ValueError(f"another preparation is running in {layout.root} (it holds {layout.lock})") from None
    if not layout.options.is_file():
        atomic_write_json(layout.options, wanted)
    for folder in (layout.videos, layout.state):
        for stale in folder.glob(".*.tmp"):  # salt.io's temporary files of a killed run
            stale.unlink(missing_ok=True)
    inputs = list(dict.fromkeys(entry.path for entry in entries))
    return Preparation(list_path, layout, options, entries, inputs, lock)


def _differences(made: dict, wanted: dict) -> str:
    if made.get("list") != wanted["list"]:
        return f"the list {made.get('list')}, not {wanted['list']}"
    made_options, wanted_options = made.get("options", {}), wanted["options"]
    changed = [f"{key}={made_options.get(key)!r} (now {value!r})" for key, value in wanted_options.items()
               if made_options.get(key) != value]
    return ", ".join(changed) or f"record version {made.get('version')}"


def finish_preparation(preparation: Preparation, wall_s: float, processed_now: int,
                       reasons: dict[str, str] | None = None) -> dict:
    """From the records: the new list (in list order, one line per chunk, labels carried; only when every input is
    finished) and report.json. `reasons`: why an input without a record is unfinished, where known. Returns the
    report."""
    layout, records = preparation.layout, {s: read_record(preparation.layout, s) for s in preparation.inputs}
    failed, unfinished, lines = [], [], []
    separator = "," if preparation.list_path.suffix.lower() == ".csv" else " "
    for entry in preparation.entries:
        record = records[entry.path]
        where = {"path": entry.path, "line": entry.line, "label": entry.label}
        if record is None:
            unfinished.append({**where, "reason": (reasons or {}).get(entry.path, "no record (interrupted?)")})
        elif record["status"] == "failed":
            failed.append({**where, "reason": record["reason"]})
        else:
            lines += [f"{chunk['file']}{separator}{entry.label}" for chunk in record["chunks"]]
    done = [r for r in records.values() if r is not None and r["status"] == "done"]
    output_list = layout.output_list(preparation.list_path)
    if not unfinished:
        atomic_write_text(output_list, "".join(line + "\n" for line in lines))
    report = {"version": RECORD_VERSION, "list": str(preparation.list_path),
              "output_list": str(output_list) if not unfinished else "", "options": dataclasses.asdict(preparation.options),
              "entries": len(preparation.entries), "inputs": len(preparation.inputs), "processed_now": processed_now,
              "failed": failed, "unfinished": unfinished,
              "totals": {"inputs_done": len(done), "files": sum(len(r["chunks"]) for r in done),
                         "lines": len(lines), "frames": sum(r["frames"] for r in done),
                         "hours": round(sum(r["seconds"] for r in done) / 3600, 4),
                         "bytes_in": sum(r["bytes_in"] for r in done), "bytes_out": sum(r["bytes_out"] for r in done)},
              "wall_s": round(wall_s, 2)}
    atomic_write_json(layout.report, report)
    return report


def prepare_collection(list_path: str | Path, out_dir: str | Path, options: PrepareOptions,
                       run: Callable[[Preparation, list[str]], dict[str, str]] | None = None,
                       workers: int = 1, retry_failed: bool = False) -> dict:
    """Prepare every unfinished input of the list and write the list and report. `run(preparation, pending)` does
    the work and returns why inputs it left without a record are unfinished (default: `workers` local processes;
    salt.study.prepare runs a SLURM array)."""
    started = time.perf_counter()
    with open_preparation(list_path, out_dir, options) as preparation:
        pending = preparation.pending(retry_failed)
        for source in pending:  # a retried failure is prepared anew
            preparation.layout.record(source).unlink(missing_ok=True)
        reasons: dict[str, str] = {}
        if pending and run is None:
            prepare_inputs(pending, preparation.layout.root, options, workers)
        elif pending:
            reasons = run(preparation, pending)
        return finish_preparation(preparation, time.perf_counter() - started, len(pending), reasons)


def summary(report: dict) -> str:
    """The lines `python -m salt prepare-videos` prints."""
    totals = report["totals"]
    lines = [f"prepared {totals['inputs_done']} of {report['inputs']} videos ({report['processed_now']} processed in this run) "
             f"into {totals['files']} files: {totals['hours']:.3f} h of video, {totals['bytes_in'] / 1e9:.3f} GB -> "
             f"{totals['bytes_out'] / 1e9:.3f} GB; {len(report['failed'])} failed, {len(report['unfinished'])} "
             f"unfinished; wall {report['wall_s']:.1f} s"]
    lines += [f"  failed: {f['path']} (line {f['line']}): {f['reason']}" for f in report["failed"]]
    lines += [f"  unfinished: {u['path']}: {u['reason']}" for u in report["unfinished"]]
    if report["output_list"]:
        lines.append(f"list: {report['output_list']}")
    else:
        lines.append("no list written: rerun the same command to finish the unfinished inputs")
    return "\n".join(lines)
