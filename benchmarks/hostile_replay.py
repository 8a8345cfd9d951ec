"""Replays the hostile cases of issue 8 on fresh libraries in a temporary folder, through the real CLI, and
prints one table: case | outcome | detail.

    python benchmarks/hostile_replay.py                 # minutes: each CLI start loads torch
    python benchmarks/hostile_replay.py --rgba-size 13000 --race-trials 14

Every command runs in its own process (`python -c "from indexer.cli import main; main()"`) with a wall-clock
timeout, and an address-space limit of twice what a process maps once torch is loaded plus `--memory-gb`
(a hard stop for the machine's sake). Outcomes: `ok` (the right answer), `clear error` (exit 1 or 2 with an
`Error:` line, no traceback), `traceback`, `hang` (timed out), `memory` (MemoryError, or a peak resident
size over the first index run's peak plus `--memory-gb`, or over the case's own budget), `wrong answer` (exit 0
with a wrong result, or a file written where none should be). Where the right answer is a refusal, the
right outcome is `clear error`. The model is a tiny random-weights open_clip config written here.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ENTRY = [sys.executable, "-c", "from indexer.cli import main; main()"]
TINY = {  # tests/conftest.py's TINY_CONFIG, 512-d so that the FAISS file outgrows the disk-full limit
    "embed_dim": 512,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
Arg = str | bytes | Path
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1  # <linux/prctl.h>, <linux/capability.h>


@dataclass
class Run:
    rc: int | None
    out: bytes
    err: str
    peak_mb: float
    timed_out: bool
    budget_mb: float
    """Peak resident size above which the run counts as a memory blow-up."""

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


class Child:
    """One CLI process: own session (killed whole on timeout), output in files, peak RSS from wait4."""

    def __init__(
        self, world: World, args: Sequence[Arg], *, fsize: int | None = None, unprivileged: bool = False
    ) -> None:
        def limits() -> None:
            os.umask(0o022)
            resource.setrlimit(resource.RLIMIT_AS, (world.address_space, world.address_space))
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if unprivileged and os.geteuid() == 0 and not _drop_dac_override():
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")

        self.budget_mb = world.rss_budget_mb
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115  # closed by GC
        argv = [*ENTRY, *(os.fsencode(a) if isinstance(a, Path) else a for a in args)]
        self.proc = subprocess.Popen(
            argv,
            stdout=self.out,
            stderr=self.err,
            env=world.env,
            cwd=world.base,
            preexec_fn=limits,
            start_new_session=True,
        )

    def finish(self, timeout: float) -> Run:
        deadline, timed_out = time.monotonic() + timeout, False
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline and not timed_out:
                os.killpg(self.proc.pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.05)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.out.seek(0)
        self.err.seek(0)
        err = self.err.read().decode(errors="replace")
        peak = usage.ru_maxrss / 1024
        return Run(self.proc.returncode, self.out.read(), err, peak, timed_out, self.budget_mb)


def _drop_dac_override() -> bool:
    """Root less CAP_DAC_OVERRIDE after exec: it still reads everything, but writes only where the mode allows."""
    return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) == 0)


class World:
    """The temporary folder: model config, photo folders, a reference library, the run options."""

    def __init__(self, base: Path, options: argparse.Namespace) -> None:
        self.base, self.options = base, options
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
        self.env |= {"LC_ALL": "C.UTF-8", "PYTHONPATH": str(REPO), "HOME": str(base), "PYTHONUTF8": "0"}
        self.address_space = _startup_address_space(self.env) + int((1 + options.memory_gb) * 2**30)
        self.rss_budget_mb = float("inf")  # the first index run's peak + --memory-gb, once it has run
        self.model = base / "tiny.json"
        self.model.write_text(json.dumps(TINY))
        self.photos = photos(base / "photos", 40, seed=0)
        photos(self.photos / "sub", 10, seed=100)
        self.lib = base / "lib"
        self.reference: list[tuple[str, float]] = []
        self.baseline_mb = 0.0

    def cli(self, *args: Arg, timeout: float = 120, **kwargs: Any) -> Run:
        return Child(self, args, **kwargs).finish(timeout)

    def index(self, root: Arg, library: Path, *extra: Arg, **kwargs: Any) -> Run:
        args = ("index", root, "--library", library, "--model", self.model, "--pretrained", "none")
        return self.cli(*args, "--device", "cpu", "--json", *extra, **kwargs)

    def copy_lib(self, name: str) -> Path:
        shutil.copytree(self.lib, self.base / name)
        return self.base / name

    def tree(self, name: str | bytes, count: int, seed: int, names: Sequence[str | bytes] = ()) -> Path:
        """The folder `name` under the base with `count` photos, made on first use (cases share some)."""
        folder = Path(os.fsdecode(os.path.join(os.fsencode(self.base), os.fsencode(name))))
        return folder if folder.exists() else photos(folder, count, seed=seed, names=names)


def _startup_address_space(env: dict[str, str]) -> int:
    """Virtual memory a CLI process maps once torch, faiss and open_clip are loaded (mostly shared libraries)."""
    code = "import torch, faiss, open_clip, PIL.Image;print(open('/proc/self/status').read())"
    status = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return int(re.search(r"VmPeak:\s+(\d+)", status)[1]) * 1024  # type: ignore[index]


def photos(folder: Path, count: int, *, seed: int, names: Sequence[str | bytes] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        hue = (seed * 37 + number * 53) % 256
        image = Image.new("RGB", (48, 48), (hue, (hue * 7) % 256, (number * 91) % 256))
        image.paste((255 - hue, number % 256, seed % 256), (number % 24, 4, 24 + number % 24, 40))
        name = names[number] if number < len(names) else f"p{seed}-{number:03d}.png"
        target = os.path.join(os.fsencode(folder), os.fsencode(name))
        with open(target, "wb") as file:
            image.save(file, format="PNG")
    return folder


# --- judging --------------------------------------------------------------------------------------------------
Verdict = tuple[str, str]
Check = Callable[[Run], Verdict]
Case = Callable[["World"], Verdict]
ERROR = None  # the right answer is a refusal
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")  # a traceback's last word, not SQLAlchemy's


def judge(run: Run, check: Check | None, rss_budget_mb: float | None = None) -> Verdict:
    """The outcome of one run; `check` judges a successful one (None: success is the wrong answer)."""
    rss_budget_mb = min(rss_budget_mb or run.budget_mb, run.budget_mb)
    err_lines = [line for line in run.err.splitlines() if line.strip()]
    if run.timed_out:
        return "hang", f"killed after the timeout (peak {run.peak_mb:.0f} MB)"
    if "MemoryError" in run.err or "Unable to allocate" in run.err or "bad_alloc" in run.err:
        return "memory", (err_lines[-1] if err_lines else "")[:70]
    if run.peak_mb > rss_budget_mb:
        return "memory", f"peak RSS {run.peak_mb:.0f} MB > {rss_budget_mb:.0f} MB"
    if "Traceback" in run.err or (run.rc or 0) < 0:
        raised = [line for line in err_lines if EXCEPTION_LINE.match(line)]
        return "traceback", ((raised or err_lines)[-1] if err_lines else f"signal {-(run.rc or 0)}")[:90]
    if run.rc != 0:
        error = next((line for line in reversed(err_lines) if line.startswith("Error:")), None)
        if run.rc in (1, 2) and error:
            return "clear error", error[7:97]
        return "traceback", f"exit {run.rc}: {(err_lines[-1] if err_lines else '')[:80]}"
    if check is None:
        return "wrong answer", "exit 0: " + (run.out.decode(errors="replace").strip()[:40] or "no output")
    return check(run)


def report_check(embedded: int, key: str = "embedded") -> Check:
    def check(run: Run) -> Verdict:
        found = run.json_lines()[-1][key]
        return ("ok" if found == embedded else "wrong answer"), f"{key} {found}, expected {embedded}"

    return check


def count_check(expected: int) -> Check:
    def check(run: Run) -> Verdict:
        count = len(run.json_lines())
        return ("ok" if count == expected else "wrong answer"), f"{count} results, expected {expected}"

    return check


# --- the cases: each sets up what it needs and returns its verdict ------------------------------------------------
def run_case(args: Callable[[World], Sequence[Arg]], check: Check | None, budget: float | None = None) -> Case:
    """A case that is one command on the reference library."""
    return lambda w: judge(w.cli(*args(w), "--library", w.lib), check, budget)


def fifo(w: World, command: str) -> Verdict:
    root = w.tree("fifo-root", 3, seed=1)
    if not (root / "x.jpg").exists():
        os.mkfifo(root / "x.jpg")
    if command == "index":
        return judge(w.index(root, w.base / "l-fifo", timeout=60), report_check(3))
    return judge(w.cli("similar", root / "x.jpg", "--library", w.lib, timeout=45), ERROR)


def zero_link(w: World, command: str) -> Verdict:
    root = w.tree("zero-root", 2, seed=2)
    if not (root / "z.png").is_symlink():
        (root / "z.png").symlink_to("/dev/zero")
    if command == "index":
        return judge(w.index(root, w.base / "l-zero", "--follow-symlinks"), report_check(2), 1500)
    return judge(w.cli("similar", root / "z.png", "--library", w.lib), ERROR)


def folder_loop(w: World) -> Verdict:
    root = w.tree("loop/a", 1, seed=3).parent
    (root / "a" / "up").symlink_to("..")
    return judge(w.index(root, w.base / "l-loop", "--follow-symlinks", timeout=180), report_check(1, "scanned"))


def rgba(w: World) -> Verdict:
    side, root = w.options.rgba_size, w.base / "rgba"
    root.mkdir()
    for number in range(2):
        Image.new("RGBA", (side, side), (number * 90, 30, 60, 128)).save(root / f"big{number}.png", compress_level=1)
    run = w.index(root, w.base / "l-rgba", "--workers", "2", timeout=600)
    outcome, detail = judge(run, report_check(2))
    decoded_mb = side * side * 4 / 2**20
    extra = (run.peak_mb - w.baseline_mb) / decoded_mb
    return outcome, f"{detail}; {side}px: peak RSS {run.peak_mb:.0f} MB = start + {extra:.1f} x {decoded_mb:.0f} MB"


def non_utf8(w: World, what: str) -> Verdict:
    root, lib = w.tree("u8", 2, seed=4, names=[b"zz\xff.png"]), w.base / "l-u8"
    odd_folder = w.tree(b"u8/d\xff", 2, seed=5)
    if what == "file":
        return judge(w.index(root, lib), report_check(4))
    if what == "root":
        return judge(w.index(w.tree(b"r\xffoot", 2, seed=6), w.base / "l-u8r"), report_check(2))
    if what == "in":
        return judge(w.cli("search", "x", "--library", lib, "--in", odd_folder, "--json"), count_check(2))
    if what == "similar":
        return judge(
            w.cli("similar", root / os.fsdecode(b"zz\xff.png"), "--library", lib, "--json", "-k", "3"), count_check(3)
        )

    def printed(run: Run) -> Verdict:
        return ("ok", "raw bytes printed") if b"zz\xff.png" in run.out else ("wrong answer", "zz\\xff.png not printed")

    return judge(w.cli("search", "x", "--library", lib, "-k", "10"), printed)


DAMAGES: dict[str, Callable[[Path, Path], object]] = {
    "garbled": lambda f, _: f.write_bytes(os.urandom(64) + f.read_bytes()[64:]),
    "truncated": lambda f, _: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "empty": lambda f, _: f.write_bytes(b""),
    "foreign": lambda f, other: f.write_bytes(other.read_bytes()),
}


def faiss_damaged(w: World, kind: str, command: str) -> Verdict:
    foreign = w.base / "l-foreign"
    if not foreign.exists():  # another library of as many images, with its FAISS file saved by a search
        w.index(w.tree("foreign-photos", 50, seed=7), foreign)
        w.cli("search", "red", "--library", foreign, "-k", "1")
    lib = w.copy_lib(f"l-faiss-{kind}-{command}")
    target = next(lib.glob("index-*.faiss"))
    DAMAGES[kind](target, next(foreign.glob("index-*.faiss")))

    def current(run: Run) -> Verdict:
        shown = str(run.json_lines()[0]["index_file"])
        return ("wrong answer", "calls the damaged file current") if shown == str(target) else ("ok", shown[:60])

    def same(run: Run) -> Verdict:
        if _ranking(run) == w.reference:
            return "ok", "same results as the intact library"
        return "wrong answer", f"{len(_ranking(run))} results, not the intact library's"

    if command == "info":
        return judge(w.cli("info", "--library", lib, "--json"), current)
    return judge(w.cli("search", "red", "--library", lib, "-k", "5", "--json"), same)


def _ranking(run: Run) -> list[tuple[str, float]]:
    return [(row["path"], round(row["score"], 3)) for row in run.json_lines()]


def database_damaged(w: World, kind: str, command: str) -> Verdict:
    lib = w.copy_lib(f"l-db-{kind}-{command}")
    db = lib / "library.db"
    for extra in lib.glob("library.db-*"):
        extra.unlink()
    db.write_bytes(b"" if kind == "zero-byte" else os.urandom(100) + db.read_bytes()[100:])
    before = db.read_bytes()
    verdict = judge(w.cli(*([command] if command == "info" else [command, "red"]), "--library", lib), check=ERROR)
    if db.read_bytes() != before:
        return "wrong answer", f"wrote into library.db ({len(before)} -> {db.stat().st_size} bytes)"
    return verdict


def read_only(w: World, command: str) -> Verdict:
    lib = w.base / "l-readonly"
    if not lib.exists():
        w.copy_lib(lib.name)
        for path in [lib, *lib.iterdir()]:
            path.chmod(0o555 if path.is_dir() else 0o444)
    if command == "index":
        outcome, detail = judge(w.index(w.photos, lib, "-q", unprivileged=True), ERROR)
    elif command == "info":
        outcome, detail = judge(w.cli("info", "--library", lib, "--json", unprivileged=True), count_check(1))
    else:
        outcome, detail = judge(
            w.cli("search", "red", "-k", "5", "--json", "--library", lib, unprivileged=True), count_check(5)
        )
    return outcome, detail[:70] + (" (root less CAP_DAC_OVERRIDE)" if os.geteuid() == 0 else "")


def disk_full(w: World, command: str) -> Verdict:
    """RLIMIT_FSIZE of 48 KB in the child: the 50 stored 512-d vectors alone take 100 KB, their FAISS file too."""
    lib, limit = w.base / "l-full", 48 * 1024
    if not lib.exists():
        w.copy_lib(lib.name)
    if command == "index":
        outcome, detail = judge(w.index(w.tree("more", 40, seed=8), lib, fsize=limit), ERROR)
        facts = w.cli("info", "--library", lib, "--json")
        intact = facts.rc == 0 and facts.json_lines()[0]["indexed"] >= 50
        return outcome, detail[:60] + ("; library intact" if intact else "; library NOT intact")
    for old in lib.glob("index-*.faiss"):
        old.unlink()
    return judge(w.cli("search", "red", "--library", lib, "-k", "5", "--json", fsize=limit), count_check(5))


def race(w: World) -> Verdict:
    """Pairs of index runs on a new library: each must index it, or refuse because the other one is indexing."""
    root, runs, failures = w.tree("race-photos", 3, seed=9), 0, []
    for trial in range(w.options.race_trials):
        lib = w.base / f"l-race-{trial}"
        args = ("index", root, "--library", lib, "--model", w.model, "--pretrained", "none", "--device", "cpu", "-q")
        for run in [child.finish(180) for child in (Child(w, args), Child(w, args))]:
            outcome, detail = judge(run, lambda run: ("ok", ""))
            runs += 1
            if outcome != "ok" and not (outcome == "clear error" and "another clipsearch process" in detail):
                failures.append((outcome, detail))
        facts = w.cli("info", "--library", lib, "--json")
        if facts.rc != 0 or facts.json_lines()[0]["indexed"] != 3:
            failures.append(("wrong answer", f"trial {trial}: library does not hold the 3 images"))
    if not failures:
        return "ok", f"{w.options.race_trials} pairs: each run indexed, or refused while the other indexed"
    failures.sort(key=lambda failure: failure[0] != "traceback")
    return failures[0][0], f"{len(failures)} of {runs} runs failed: {failures[0][1][:60]}"


def failed_model_load(w: World) -> Verdict:
    junk, lib = w.base / "junk.pt", w.base / "l-badmodel"
    junk.write_bytes(b"not a checkpoint" * 64)
    args = ("index", w.photos / "sub", "--library", lib, "--model", w.model, "--pretrained", junk, "--device", "cpu")
    verdict = judge(w.cli(*args), ERROR)
    if (lib / "library.db").exists():
        return "wrong answer", f"{verdict[0]}, and library.db was left behind"
    return verdict


def churn(w: World) -> Verdict:
    """Searches (-k 20) while index runs remove 50 of 60 images and add them back: 20 or 10 results are right."""
    root, stash, lib = w.tree("churn", 60, seed=10), w.base / "churn-stash", w.base / "l-churn"
    stash.mkdir()
    w.index(root, lib, "--batch-size", "16")
    moving, done = sorted(root.iterdir())[:50], threading.Event()

    def toggle() -> None:
        try:
            for _ in range(w.options.churn_rounds):
                for src, dst in ((root, stash), (stash, root)):
                    for path in moving:
                        (src / path.name).rename(dst / path.name)
                    w.index(root, lib, "--batch-size", "16")
        finally:
            done.set()

    counts: list[int] = []
    errors: list[Run] = []

    def search() -> None:
        while not done.is_set():
            run = w.cli("search", "red", "--library", lib, "-k", "20", "--json")
            if judge(run, lambda run: ("ok", ""))[0] == "ok":
                counts.append(len(run.json_lines()))
            else:
                errors.append(run)

    threads = [threading.Thread(target=toggle), threading.Thread(target=search), threading.Thread(target=search)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        return judge(errors[0], None)
    short = [c for c in counts if c not in (10, 20)]
    if short:
        return "wrong answer", f"{len(short)} of {len(counts)} searches short: {sorted(short)} results"
    return "ok", f"0 of {len(counts)} searches short (a CLI search's window is milliseconds: 0 proves little)"


def readme_fields(w: World) -> Verdict:
    match = re.search(r"`--json` prints one object per line \(([^)]*)\)", (REPO / "README.md").read_text())
    if match is None:
        return "wrong answer", "README lists no --json fields"
    documented = {field.strip().strip("`") for field in match[1].split(",")}
    actual = set(w.cli("search", "red", "--library", w.lib, "-k", "1", "--json").json_lines()[0])
    if documented == actual:
        return "ok", "README fields = JSON keys"
    return "wrong answer", f"README only: {sorted(documented - actual)}; JSON only: {sorted(actual - documented)}"


def link_out(w: World) -> Verdict:
    root, outside = w.tree("priv", 2, seed=11), w.tree("outside", 1, seed=12)
    (root / "leak.png").symlink_to(next(outside.iterdir()))
    return judge(w.index(root, w.base / "l-priv"), report_check(2))


def modes(w: World) -> Verdict:
    lib = w.base / "l-modes"
    verdict = judge(w.index(w.photos / "sub", lib), report_check(10))
    if verdict[0] != "ok":
        return verdict
    w.cli("search", "red", "--library", lib, "-k", "1")  # writes the FAISS file too
    loose = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in [lib, *lib.iterdir()] if p.stat().st_mode & 0o077}
    return ("wrong answer", f"group/other access: {loose}"[:90]) if loose else ("ok", "folder 0700, files 0600")


def null_paths(w: World) -> Verdict:
    names = ["a b.png", "new\nline.png", "plain.png"]
    root, lib = w.tree("names", 3, seed=13, names=names), w.base / "l-names"
    w.index(root, lib)
    run = w.cli("search", "red", "--library", lib, "-k", "3", "--paths", "-0")
    if run.rc != 0:
        return judge(run, None)
    script = 'for f; do [ -f "$f" ] && printf "%s\\0" "$f"; done'
    piped = subprocess.run(["xargs", "-0", "-r", "sh", "-c", script, "_"], input=run.out, capture_output=True).stdout
    found = {item for item in piped.split(b"\0") if item}
    if found == {os.fsencode(root / name) for name in names}:
        return "ok", "xargs -0 got the 3 files"
    return "wrong answer", f"xargs got {len(found)} files"


P = functools.partial
HUGE_K, MIN_SCORES = ["search", "x", "-k", "1000000000", "--in"], ("nan", "inf", "2")
CASES: list[tuple[str, Case]] = [
    ("FIFO x.jpg under a root: index", P(fifo, command="index")),
    ("similar on a FIFO", P(fifo, command="similar")),
    ("z.png -> /dev/zero: index --follow-symlinks", P(zero_link, command="index")),
    ("z.png -> /dev/zero: similar", P(zero_link, command="similar")),
    ("--follow-symlinks folder loop", folder_loop),
    ("2 large RGBA PNGs, 2 workers", rgba),
    ("huge -k with --in", run_case(lambda w: [*HUGE_K, w.photos / "sub", "--json"], count_check(10), 1500)),
    ("--in a missing folder", run_case(lambda w: ["search", "x", "--in", w.base / "nope"], ERROR)),
    *[
        (f"--min-score {v}", run_case(P(lambda _, v: ["search", "x", "--min-score", v], v=v), ERROR))
        for v in MIN_SCORES
    ],
    ("--json with --paths", run_case(lambda w: ["search", "x", "--json", "--paths"], ERROR)),
    ("non-UTF-8 file name: index", P(non_utf8, what="file")),
    ("non-UTF-8 name as a root: index", P(non_utf8, what="root")),
    ("non-UTF-8 name as --in", P(non_utf8, what="in")),
    ("non-UTF-8 name to similar", P(non_utf8, what="similar")),
    ("non-UTF-8 path in plain output", P(non_utf8, what="print")),
    *[(f"{k} FAISS file: {c}", P(faiss_damaged, kind=k, command=c)) for k in DAMAGES for c in ("search", "info")],
    *[
        (f"{k} library.db: {c}", P(database_damaged, kind=k, command=c))
        for k in ("garbled", "zero-byte")
        for c in ("info", "search")
    ],
    *[(f"read-only library: {c}", P(read_only, command=c)) for c in ("info", "search", "index")],
    ("disk full: index", P(disk_full, command="index")),
    ("disk full: search (FAISS file cannot be saved)", P(disk_full, command="search")),
    ("two first index runs racing", race),
    ("failed model load", failed_model_load),
    ("searches while index removes images", churn),
    ("README --json fields vs output", readme_fields),
    ("file link out of the root (no --follow-symlinks)", link_out),
    ("library file modes under umask 022", modes),
    ("--paths -0 piped to xargs -0 (spaces, newline)", null_paths),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rgba-size", type=int, default=6000, help="side of the two RGBA PNGs (issue: 13000)")
    parser.add_argument("--race-trials", type=int, default=5, help="pairs of first-ever index runs")
    parser.add_argument("--churn-rounds", type=int, default=3, help="remove/re-add rounds during searches")
    parser.add_argument("--memory-gb", type=float, default=3.0, help="memory allowed beyond a plain index run")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="clipsearch-hostile-"))
    base.chmod(0o755)  # the read-only cases run as nobody
    try:
        world = World(base, options)
        indexed = world.index(world.photos, world.lib)
        assert indexed.rc == 0, indexed.err
        world.baseline_mb = indexed.peak_mb
        world.rss_budget_mb = indexed.peak_mb + options.memory_gb * 1024
        world.reference = _ranking(world.cli("search", "red", "--library", world.lib, "-k", "5", "--json"))
        rows = []
        for name, case in CASES:
            if options.only in name:
                started = time.monotonic()
                try:
                    outcome, detail = case(world)
                except Exception as exc:  # a broken case must not hide the others
                    outcome, detail = "script error", f"{type(exc).__name__}: {exc}"[:90]
                rows.append((name, outcome, detail))
                print(f"  {name}: {outcome} ({time.monotonic() - started:.0f}s)", file=sys.stderr, flush=True)
        width = max(len(row[0]) for row in rows)
        print(f"| {'case':<{width}} | outcome      | detail")
        print(f"|{'-' * (width + 2)}|--------------|-------")
        for name, outcome, detail in rows:
            print(f"| {name:<{width}} | {outcome:<12} | {detail.replace('|', '/')}")
    finally:
        if not options.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
