"""Every row of the README's bad-input table, through the container contract harness (test/contract.py):
inference.py as nobody, read-only input and model, no network, an empty temporary directory."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from cases import ROWS, case, world_readable
from cases import check as check_row
from contract import harness_available, platform_limits, run_contract
from helpers import make_model_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(harness_available() is not None, reason=str(harness_available())),
]


@pytest.fixture(scope="module")
def scratch():
    path = Path(tempfile.mkdtemp(prefix="contract-fixtures-"))
    path.chmod(0o755)  # the contained process (nobody) must reach the cases and the model below
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def model_dir(scratch):
    return make_model_dir(scratch)


def check(run, code: int, needles: list[str]) -> None:
    assert run.strays == [], f"files written outside output/ and tmp/: {run.strays}"
    check_row(run, code, needles)


@pytest.mark.parametrize(("name", "mutate", "extra", "code", "needles"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_table(scratch, model_dir, name, mutate, extra, code, needles):
    run = run_contract(case(scratch, name, mutate), model_dir, *extra)
    check(run, code, needles)
    if name == "complete case":
        assert "warning" not in run.stderr, run.stderr


def test_same_input_gives_byte_identical_output(scratch, model_dir):
    path = case(scratch, "twice")
    first, second = run_contract(path, model_dir), run_contract(path, model_dir)
    check(first, 0, [])
    assert first.output == second.output


@pytest.mark.parametrize("problem", ["no bundle", "corrupt bundle", "no encoder weights"])
def test_model_problems_fail_in_one_line(scratch, model_dir, problem):
    broken = scratch / f"model-{problem.replace(' ', '-')}"
    shutil.copytree(model_dir, broken)
    if problem == "no bundle":
        shutil.rmtree(broken / "bundle")
    elif problem == "corrupt bundle":
        w = broken / "bundle" / "member_00" / "weights.safetensors"
        data = bytearray(w.read_bytes())
        data[len(data) // 2] ^= 0xFF
        w.write_bytes(bytes(data))
    else:
        for f in (broken / "encoder").iterdir():
            f.unlink()
    world_readable(broken)
    run = run_contract(case(scratch, f"for-{problem.replace(' ', '-')}"), broken)
    check(
        run,
        1,
        {
            "no bundle": ["not a directory"],
            "corrupt bundle": ["checksum mismatch"],
            "no encoder weights": ["expected one tile-encoder weights file"],
        }[problem],
    )
    assert len(run.stderr.strip().splitlines()) == 1


PROBE = """
import os, resource, socket, sys
input_dir, out = sys.argv[1], sys.argv[2]
print("uid", os.geteuid())
print("data limit", resource.getrlimit(resource.RLIMIT_DATA))
print("cpus", len(os.sched_getaffinity(0)))
try:
    bytearray(resource.getrlimit(resource.RLIMIT_DATA)[0] + 2**30)  # one GiB over the limit
    print("over the limit allocated")
except MemoryError:
    print("over the limit MemoryError")
print("model", sorted(os.listdir("/opt/ml/model")))
try:
    open("/opt/ml/model/x", "w")
    print("model writable")
except OSError as err:
    print("model", err.strerror)
try:
    open(os.path.join(input_dir, "x"), "w")
    print("input writable")
except OSError as err:
    print("input", err.strerror)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    print("network reachable")
except OSError as err:
    print("network", err.strerror)
open(os.path.join(out, "ok"), "w").write("1")
print("interfaces", sorted(name for _, name in socket.if_nameindex()))
"""


def test_the_harness_really_confines_the_process(scratch, model_dir):
    """Guards the guard: the contained process is nobody, without network, with a read-only input,
    under the platform's data-segment limit and CPU count, with the model extracted from the tarball
    read-only at /opt/ml/model."""
    path = case(scratch, "probe")
    path.chmod(0o777)  # writable by anyone: only the read-only mount can stop the write
    run = run_contract(path, model_dir, program=PROBE)
    assert run.returncode == 0, run.stderr
    assert f"uid {65534}" in run.stdout
    data = platform_limits()["GC_DATA_LIMIT_GIB"] * 2**30
    assert f"data limit ({data}, {data})" in run.stdout
    assert "over the limit MemoryError" in run.stdout  # the limit is enforced, not only set
    assert f"cpus {min(4, len(os.sched_getaffinity(0)))}" in run.stdout
    assert "model ['SHA256SUMS', 'bundle', 'encoder']" in run.stdout  # the tarball's content
    assert "model Read-only file system" in run.stdout
    assert "input Read-only file system" in run.stdout
    assert "network reachable" not in run.stdout and "network Network is unreachable" in run.stdout
    assert "interfaces ['lo']" in run.stdout
    assert run.strays == []
