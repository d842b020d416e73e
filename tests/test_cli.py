"""The fundus command: user errors are one clear line and exit code 2, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from fundus_lib.cli import main
from fundus_lib.config import load_params
from fundus_lib.paths import project_root


def test_check_accepts_the_params_files(capsys):
    files = sorted(str(path) for path in (project_root() / "params").glob("*.yaml"))
    assert main(["check", *files]) == 0
    assert capsys.readouterr().out.count(": ok") == len(files)


def test_check_names_a_bad_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata: {image_sise: 64}\n")
    assert main(["check", str(bad)]) == 2
    assert "data.image_sise" in capsys.readouterr().err


def test_data_reports_a_broken_labels_file(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text("image,level\n1_left,7\n")
    params = tmp_path / "p.yaml"
    params.write_text(
        f"name: p\ndata:\n  source: eyepacs\n  eyepacs: {{images_dir: {tmp_path / 'images'}, "
        f"labels_csv: {tmp_path / 'labels.csv'}}}\n"
    )
    assert main(["data", str(params)]) == 2
    err = capsys.readouterr().err
    assert "level must be an integer 0-4" in err and "line 2" in err


def test_real_paths_without_source_eyepacs_stop_check_and_data(tmp_path, capsys, real_sample):
    params = tmp_path / "p.yaml"
    params.write_text(
        f"name: p\ndata:\n  eyepacs: {{images_dir: {real_sample / 'images'}, "
        f"labels_csv: {real_sample / 'labels.csv'}}}\n"
    )
    for command in ("check", "data"):
        assert main([command, str(params)]) == 2
        err = capsys.readouterr().err
        assert "data.eyepacs is given but data.source is 'synthetic'" in err and len(err.splitlines()) == 2


def test_unknown_chapter_lists_the_chapters(capsys):
    assert main(["run", "99", "--params", "params/smoke.yaml", "--quiet"]) == 2
    assert "01_data" in capsys.readouterr().err


def test_data_prints_the_split(capsys, real_sample, tmp_path):
    params = tmp_path / "real.yaml"
    params.write_text(
        f"name: real\ndata:\n  source: eyepacs\n  image_size: 32\n  workers: 1\n"
        f"  eyepacs: {{images_dir: {real_sample / 'images'}, labels_csv: {real_sample / 'labels.csv'}}}\n"
    )
    assert main(["data", str(params)]) == 0
    out = capsys.readouterr().out
    assert "manifest hash" in out and "10 image(s) skipped" in out and "grayscale" in out


@pytest.mark.parametrize("argv", [[], ["nonsense"]])
def test_usage_errors_exit_non_zero(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0


def test_data_where_no_image_is_usable_is_an_error(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "1_left.jpeg").write_text("not an image")
    (tmp_path / "labels.csv").write_text("image,level\n1_left,0\n1_right,1\n2_left,2\n")
    params = tmp_path / "p.yaml"
    params.write_text(
        f"name: p\ndata:\n  source: eyepacs\n  workers: 1\n"
        f"  eyepacs: {{images_dir: {images}, labels_csv: {tmp_path / 'labels.csv'}}}\n"
    )
    assert main(["data", str(params)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith(f"fundus data: none of the 3 listed images in {images} is usable")
    assert "2 x file not found" in last and "1 x not an image file" in last


def _kernels(pid: int) -> list[int]:
    """The notebook kernels started by process ``pid``."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        command = (status.parent / "cmdline").read_bytes() if (status.parent / "cmdline").exists() else b""
        if fields.get("PPid", "").strip() == str(pid) and b"ipykernel" in command:
            found.append(int(status.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_a_chapter_kernel_dies_with_fundus_run(tmp_path):
    """kill -9 of `fundus run` leaves no notebook kernel behind (ipykernel polls its parent)."""
    import signal
    import subprocess
    import sys
    import time

    fundus = Path(sys.executable).parent / "fundus"
    process = subprocess.Popen(
        [str(fundus), "run", "01", "--params", "params/smoke.yaml", "--out", str(tmp_path), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (kernels := _kernels(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert kernels, "no kernel started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in kernels) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() for pid in kernels), "a kernel outlived fundus run"


def test_fundus_run_trains_each_missing_run_once_before_its_chapter(tmp_path, monkeypatch, capsys):
    """`fundus run` trains a chapter's missing runs on the console first (which run, k of n, time
    left), each run once: chapter 5's baseline is chapter 2's, so only chapter 2 lists it."""
    from fundus_lib.cli import _ConsoleTrainer, runs_to_train

    monkeypatch.setenv("FUNDUS_RUNS_DIR", str(tmp_path / "runs"))
    params = load_params(project_root() / "params" / "smoke.yaml")
    chapters = ["02_baselines", "05_adversarial"]
    missing = runs_to_train(params, chapters, progress=False)
    assert list(missing["02_baselines"]) == ["02 baselines: small-cnn 48 px"]
    assert list(missing["05_adversarial"]) == ["05 adversarial: adversarially trained"]
    trainer = _ConsoleTrainer(missing["02_baselines"] | missing["05_adversarial"], quiet=True)
    baseline_work, adversarial_work = trainer.work.values()
    assert adversarial_work > baseline_work  # PGD steps count as passes
    assert trainer.train(missing["02_baselines"]) > 0
    trainer.train(missing["05_adversarial"])
    assert trainer.train({}) < 1
    out = capsys.readouterr().out
    assert "-- run 1/2: 02 baselines: small-cnn 48 px\n" in out
    assert "-- run 2/2: 05 adversarial: adversarially trained, about" in out
    assert runs_to_train(params, chapters, progress=False) == {}
