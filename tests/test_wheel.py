"""The package a learner installs: build the wheel, install it into a fresh venv, run the course from it.

What is fresh, and why that is a fair test of `pip install sdedu`: the venv is new and empty, the wheel is
built from the repository (sdist first, then the wheel from the unpacked sdist, as `python -m build` does,
so MANIFEST.in and setup.py's course copy are exercised), and `sdedu`, its notebooks, exercises, weights
and Jupyter configuration come only from that wheel: the repository is never on the path (every command
runs from a temporary folder, and the .venv's editable install of sdedu is not activated). What is borrowed,
to stay within a test's time, are the *dependencies* (torch, diffusers, JupyterLab, ...): a `.pth` file
puts the project's .venv site-packages on the fresh venv's path, and JUPYTERLAB_DIR / JUPYTER_PATH point
at the data files pip installed with them (JupyterLab's front end, the python3 kernel spec), where a real
install would put them in the venv itself. `pip install --no-deps` then installs the wheel alone. Installing
the dependencies too takes minutes, and was done by hand (docs/CHANGELOG.md records how long).
"""

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from sdedu import __version__

ROOT = Path(__file__).resolve().parents[1]
START = "notebooks/00_start_here.ipynb"
NOTEBOOK_01 = "notebooks/01_what_is_stable_diffusion.ipynb"


def run(argv, env, cwd, timeout=600, check=True):
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, environment, a working folder outside the repository) with the wheel installed."""
    pytest.importorskip("build", reason="the build package is missing: pip install -c constraints.txt -e '.[test]'")
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    share = Path(sys.prefix) / "share" / "jupyter"
    env.update(
        SDEDU_QUICK="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        JUPYTERLAB_DIR=str(share / "lab"),
        JUPYTER_PATH=str(share),
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),  # not the developer's ~/.jupyter
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        PIP_NO_INDEX="1",
    )
    # 1. The wheel, built without network (--no-isolation: the build backend, setuptools, is taken from this
    #    environment instead of being downloaded into a throw-away one).
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", ROOT], env, tmp)
    (wheel,) = (tmp / "dist").glob("sdedu-*.whl")
    # 2. A fresh venv that sees the dependencies, then the wheel alone.
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], env, tmp)
    site = Path(run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    env, tmp).stdout.strip())  # fmt: skip
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz-sdedu-test-dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--ignore-installed", wheel], env, tmp)
    work = tmp / "home"
    work.mkdir()
    return venv, env, work


def test_the_wheel_holds_the_library_weights_and_course_and_runs_from_the_venv(installed):
    venv, env, work = installed
    code = "import sdedu, sdedu.course as c, sdedu.manifest as m; print(sdedu.__file__, c.course_source(), m.SHIPPED)"
    paths = [Path(p) for p in run([venv / "bin" / "python", "-c", code], env, work).stdout.split()]
    assert all(venv in p.parents for p in paths), paths  # the installed package, never the repository
    source = paths[1]
    assert (source / START).is_file() and (source / "exercises").is_dir() and (source / "jupyter").is_dir()
    assert (paths[2] / "manifest.json").is_file() and list(paths[2].glob("*.safetensors"))
    version = run([venv / "bin" / "sdedu", "--version"], env, work).stdout.strip()
    assert version == f"sdedu {__version__}"
    check = run([venv / "bin" / "sdedu", "course", "course", "--check"], env, work)
    assert check.stdout.splitlines()[-1].startswith("all checks passed"), check.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sdedu_course_opens_jupyterlab_on_notebook_00_and_never_overwrites(installed):
    venv, env, work = installed
    log = (work / "lab.log").open("w")
    lab = subprocess.Popen(
        [venv / "bin" / "sdedu", "course", "course", "--port", str(free_port())],
        env=env,
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # The course folder's JupyterLab writes jpserver-<pid>.json (sdedu course execs into it: same pid).
        info_file = Path(env["JUPYTER_RUNTIME_DIR"]) / f"jpserver-{lab.pid}.json"
        deadline = time.monotonic() + 180
        while not info_file.is_file() and lab.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert info_file.is_file(), (work / "lab.log").read_text()
        server = json.loads(info_file.read_text())
        assert Path(server["root_dir"]) == (work / "course").resolve()

        def get(path):
            with urllib.request.urlopen(f"{server['url']}{path}?token={server['token']}", timeout=60) as response:
                return response.status, response.read().decode()

        status, body = get(f"api/contents/{START}")
        assert status == 200 and json.loads(body)["type"] == "notebook"
        status, page = get(f"lab/tree/{START}")
        assert status == 200 and "JupyterLab" in page
        assert "workspace" in {item["name"] for item in json.loads(get("api/contents/")[1])["content"]}
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=60)
        except subprocess.TimeoutExpired:  # never leave a server behind
            lab.kill()
            lab.wait()
        log.close()

    course = work / "course"
    exercise = sorted((course / "workspace").glob("*.ipynb"))[0]
    exercise.write_text("my answer")
    (course / START).unlink()
    run([venv / "bin" / "sdedu", "course", "course", "--no-lab"], env, work)
    assert exercise.read_text() == "my answer" and (course / START).is_file()


def test_notebook_01_runs_to_the_end_in_the_course_folder_with_the_installed_package(installed):
    venv, env, work = installed
    run([venv / "bin" / "sdedu", "course", "course", "--no-lab"], env, work)
    notebooks = work / "course" / "notebooks"
    nb = nbformat.read(notebooks / Path(NOTEBOOK_01).name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sdedu\nprint('SDEDU FROM', sdedu.__file__)"))
    nbformat.write(nb, notebooks / "01_checked.ipynb")
    run(
        [venv / "bin" / "python", "-m", "nbconvert", "--to", "notebook", "--execute", "01_checked.ipynb",
         "--output", "01_executed.ipynb", "--ExecutePreprocessor.timeout=900"],
        env, notebooks, timeout=1200,
    )  # fmt: skip
    executed = nbformat.read(notebooks / "01_executed.ipynb", as_version=4)
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    (last,) = executed.cells[-1].outputs
    assert Path(last.text.split()[-1]).is_relative_to(venv), last.text
