"""SLURM support without a cluster: scripts, profiles, plans, signals, data sharding.

The tests that need a running SLURM are in ``test_slurm_cluster.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from specclass.cli import main
from specclass.cluster import arrays, profiles
from specclass.cluster.distribute import process_batch_rows, slurm_cpus
from specclass.cluster.slurm import EXIT_INTERRUPTED, JobSpec, parse_time, render_script, specclass_command


# --- time limits, job options -----------------------------------------------------------
@pytest.mark.parametrize(
    "text, seconds",
    [("5", 300), ("05:30", 330), ("02:00:00", 7200), ("1-0", 86400), ("1-02:03", 93780), ("2-00:00:10", 172810)],
)
def test_parse_time_accepts_sbatch_forms(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "1:2:3:4", "ab", "1-", "-5"])
def test_parse_time_rejects_other_text(text):
    with pytest.raises(ValueError, match="not a SLURM time"):
        parse_time(text)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"ntasks": 0}, "ntasks=0"),
        ({"cpus_per_task": "4"}, "cpus-per-task"),
        ({"mem": "lots"}, "mem='lots'"),
        ({"mail_type": "END,SOMETIMES"}, "SOMETIMES"),
        ({"signal": "B:USR1@soon"}, "signal"),
        ({"time": "99:99:99:99"}, "not a SLURM time"),
        ({"walltime": "1"}, "unknown job option"),
        ({"extra": ["exclusive"]}, "give an sbatch option"),
    ],
)
def test_jobspec_validation_names_the_option(values, match):
    with pytest.raises(ValueError, match=match):
        JobSpec().merged(values)


def test_render_script_writes_options_setup_and_signal_forwarding():
    spec = JobSpec().merged({
        "job_name": "fit", "partition": "gpu", "nodes": 1, "ntasks_per_node": 2, "cpus_per_task": 4,
        "gpus_per_node": 2, "mem": "16G", "time": "01:00:00", "mail_user": "a@b.c", "mail_type": "END,FAIL",
        "output": "fit-%j.out", "error": "fit-%j.err", "requeue": False, "signal": "B:USR1@120",
        "extra": ["--exclusive"], "setup": ["module load cuda"], "env": {"KERAS_BACKEND": "jax"},
        "python": "python3",
    })
    text = render_script(spec, ["train", "--out", "runs/a b"])
    sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == [
        "#SBATCH --job-name=fit", "#SBATCH --partition=gpu", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=2",
        "#SBATCH --cpus-per-task=4", "#SBATCH --gpus-per-node=2", "#SBATCH --mem=16G", "#SBATCH --time=01:00:00",
        "#SBATCH --mail-user=a@b.c", "#SBATCH --mail-type=END,FAIL", "#SBATCH --output=fit-%j.out",
        "#SBATCH --error=fit-%j.err", "#SBATCH --signal=B:USR1@120", "#SBATCH --no-requeue",
        "#SBATCH --exclusive",
    ]
    assert text.startswith("#!/bin/bash\n")
    assert "module load cuda\n" in text and "export KERAS_BACKEND=jax\n" in text
    assert "python3 -m specclass train --out 'runs/a b' &\n" in text
    assert "trap '_specclass_forward USR1' USR1" in text and "trap '_specclass_forward TERM' TERM" in text
    # the set-up comes before the command
    assert text.index("module load cuda") < text.index("python3 -m specclass")


def test_render_script_is_valid_bash():
    text = render_script(JobSpec(time="5", setup=["echo ready"]), ["srun", "hostname"])
    res = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert res.returncode == 0, res.stderr


def test_forwarding_shell_passes_usr1_to_the_command_and_keeps_its_status(tmp_path):
    """Run a rendered script's body with plain bash, signal the shell, see the child react."""
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(f"""
        import signal, sys, time
        def on(sig, frame):
            open({str(tmp_path / 'got')!r}, 'w').write(str(sig)); sys.exit({EXIT_INTERRUPTED})
        signal.signal(signal.SIGUSR1, on)
        open({str(tmp_path / 'ready')!r}, 'w').close()
        time.sleep(30)
    """))
    script = tmp_path / "job.sh"
    script.write_text(render_script(JobSpec(), [sys.executable, str(child)]))
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, text=True)
    for _ in range(200):
        if (tmp_path / "ready").exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_INTERRUPTED
    assert (tmp_path / "got").read_text() == str(int(signal.SIGUSR1))
    assert f"command exited with status {EXIT_INTERRUPTED}" in out


def test_specclass_command_prefixes_the_interpreter():
    assert specclass_command(["train", "-x"], "py") == ["py", "-m", "specclass", "train", "-x"]
    assert specclass_command(["specclass", "mnist", "train"], "py") == ["py", "-m", "specclass", "mnist", "train"]
    assert specclass_command(["srun", "hostname"], "py") == ["srun", "hostname"]
    with pytest.raises(ValueError, match="no command"):
        specclass_command([])


# --- profiles ------------------------------------------------------------------------------
def test_shipped_hamburg_profile_reproduces_the_tutorial_job():
    spec = profiles.load_spec("hamburg")
    assert spec.partition == "std" and spec.nodes == 1 and spec.time == "02:00:00"
    assert spec.mail_type == "END,FAIL" and spec.output.endswith("%j.out") and spec.error.endswith("%j.err")
    assert any(line.startswith("module load") for line in spec.setup)
    assert any("conda activate" in line for line in spec.setup)
    assert set(profiles.shipped_profiles()) >= {"hamburg", "hamburg-gpu", "venv"}
    assert profiles.load_spec("hamburg-gpu").partition == "gpu"


def test_profile_formats_agree_and_options_override(tmp_path):
    (tmp_path / "p.toml").write_text('partition = "big"\nntasks = 4\nsetup = ["module load a"]\n[env]\nX = "1"\n')
    (tmp_path / "p.json").write_text(json.dumps(
        {"partition": "big", "ntasks": 4, "setup": ["module load a"], "env": {"X": "1"}}))
    (tmp_path / "p.ini").write_text("[job]\npartition = big\nntasks = 4\nsetup =\n    module load a\n[env]\nX = 1\n")
    specs = [profiles.load_spec(tmp_path / f"p.{ext}") for ext in ("toml", "json", "ini")]
    assert specs[0] == specs[1] == specs[2]
    spec = profiles.load_spec(tmp_path / "p.toml", partition="spc", setup=["conda activate k"], env={"Y": "2"})
    assert spec.partition == "spc" and spec.ntasks == 4
    assert spec.setup == ["module load a", "conda activate k"] and spec.env == {"X": "1", "Y": "2"}


def test_bad_profiles_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('partiton = "std"\n')
    with pytest.raises(profiles.ProfileError, match=r"bad\.toml.*partiton"):
        profiles.read_profile(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(profiles.ProfileError, match="broken.json: cannot parse"):
        profiles.read_profile(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('time = "soon"\n')
    with pytest.raises(profiles.ProfileError, match="wrong.toml: time 'soon'"):
        profiles.read_profile(wrong)
    with pytest.raises(profiles.ProfileError, match="not a shipped profile"):
        profiles.read_profile("no-such-site")


# --- CLI ------------------------------------------------------------------------------------
def test_cli_script_uses_profile_options_and_adds_a_warning_signal(capsys):
    assert main(["slurm", "script", "--profile", "hamburg", "-p", "gpu", "-t", "00:20:00", "--",
                 "train", "--epochs", "3"]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --partition=gpu\n" in text and "#SBATCH --time=00:20:00\n" in text
    assert "#SBATCH --signal=B:USR1@300\n" in text  # the profile's
    assert "python -m specclass train --epochs 3 &" in text
    assert main(["slurm", "script", "-t", "10:00", "--", "mnist", "train"]) == 0
    assert "#SBATCH --signal=B:USR1@60\n" in capsys.readouterr().out  # a tenth of 10 min


def test_cli_errors_are_clear(capsys):
    assert main(["slurm", "script", "--time", "tomorrow", "--", "train"]) == 2
    assert "time 'tomorrow' is not a SLURM time" in capsys.readouterr().err
    assert main(["slurm", "script", "-t", "5"]) == 2
    assert "no command given" in capsys.readouterr().err


def test_cli_without_sbatch_says_which_command_failed(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no SLURM here
    assert main(["slurm", "submit", "-t", "5", "--", "train"]) == 2
    err = capsys.readouterr().err
    assert "`sbatch --parsable" in err and "not found" in err


# --- array plans ----------------------------------------------------------------------------
def test_plan_round_trip_and_scripts(tmp_path, sdss_dir):
    plan = arrays.make_plan([sdss_dir / "spectra"], tmp_path / "ds.h5", 3, build_options={"labels": "seed4"})
    path = plan.save(tmp_path / "ds.h5.shards" / "plan.json")
    again = arrays.ArrayPlan.load(path)
    assert again == plan
    assert again.missing_shards() == [0, 1, 2]
    assert again.shard_path(2).name == "shard-0002-of-0003.h5"
    array_script, merge_script = arrays.render_scripts(path, again, JobSpec(time="10"), shards=[1])
    assert "#SBATCH --array=1\n" in array_script
    assert '--index "$SLURM_ARRAY_TASK_ID"' in array_script
    assert "merge-shards" in merge_script and "--array" not in merge_script
    assert "#SBATCH --array=0-2\n" in arrays.render_scripts(path, again, JobSpec())[0]
    kwargs = arrays.build_kwargs({"grid": {"loglam_min": 3.6, "loglam_max": 3.9, "step": 1e-4},
                                  "bad_mask_bits": "none", "labels": "class3"})
    assert kwargs["grid"].npix == 3001 and kwargs["bad_mask_bits"] == 0 and kwargs["labels"] == "class3"
    with pytest.raises(ValueError, match="unknown build/merge option"):
        arrays.make_plan([sdss_dir / "spectra"], tmp_path / "x.h5", 2, build_options={"colour": 1})
    with pytest.raises(ValueError, match="not found"):
        arrays.make_plan([tmp_path / "nothing"], tmp_path / "x.h5", 2)
    (tmp_path / "junk.json").write_text("[]")
    with pytest.raises(ValueError, match="junk.json: not a specclass array plan"):
        arrays.ArrayPlan.load(tmp_path / "junk.json")
    with pytest.raises(FileNotFoundError, match=r"shards \[0, 1, 2\] of 3 are missing"):
        arrays.merge(again)


# --- devices --------------------------------------------------------------------------------
def test_process_batch_rows_rebuild_the_global_batches():
    n, b, p = 103, 8, 2
    parts = [process_batch_rows(n, b, i, p) for i in range(p)]
    # global batch k = process 0's k-th local batch followed by process 1's
    glued = np.concatenate([np.concatenate([q.reshape(-1, b // p)[k] for q in parts]) for k in range(n // b)])
    np.testing.assert_array_equal(glued, np.arange((n // b) * b))
    with pytest.raises(ValueError, match="not divisible"):
        process_batch_rows(10, 3, 0, 2)


def test_slurm_cpus_reads_the_environment():
    assert slurm_cpus({"SLURM_CPUS_PER_TASK": "6"}) == 6
    assert slurm_cpus({}) is None and slurm_cpus({"SLURM_CPUS_PER_TASK": "x"}) is None


# --- graceful stop on a signal (real signals, real Keras fit) -----------------------------
_STOP_SCRIPT = r"""
import json, os, signal, sys
import numpy as np
import keras
from specclass.cluster.signals import GracefulStop, TrainingInterrupted
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
for sig in ("SIGUSR1", "SIGTERM"):
    seen = []
    class Mark(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)
        def on_train_batch_end(self, batch, logs=None):
            if len(seen) == 1 and batch == 2:  # in the middle of epoch 1
                os.kill(os.getpid(), getattr(signal, sig))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    try:
        model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[Mark(), GracefulStop()])
    except TrainingInterrupted as exc:
        print(json.dumps({"finished": seen, "resume_at": exc.epoch, "signal": exc.signal_name, "code": exc.code,
                          # the old handler is back (behind one that ignores repeats for a while)
                          "handler_restored": getattr(signal.getsignal(signal.SIGTERM), "previous",
                                                      signal.getsignal(signal.SIGTERM)) == signal.SIG_DFL}))
# uncaught, it ends the process with status 75 and no traceback
signal.signal(signal.SIGUSR1, lambda *a: None)
raise TrainingInterrupted("SIGUSR1", 3)
"""


def test_graceful_stop_on_real_signals(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(_STOP_SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert res.returncode == EXIT_INTERRUPTED, res.stderr[-2000:]
    usr1, term = (json.loads(line) for line in res.stdout.strip().splitlines()[-2:])
    # warning signal: epoch 1 is finished (and backed up by the training's callbacks), then stop
    assert usr1 == {"finished": [0, 1], "resume_at": 2, "signal": "SIGUSR1", "code": EXIT_INTERRUPTED,
                    "handler_restored": True}
    # time is up: stop after the batch; the partial epoch 1 never reaches on_epoch_end
    assert term == {"finished": [0], "resume_at": 1, "signal": "SIGTERM", "code": EXIT_INTERRUPTED,
                    "handler_restored": True}
    assert "Traceback" not in res.stderr


_DOUBLE_TERM_SCRIPT = r"""
import json, os, signal, sys
import numpy as np
import keras
from specclass.cluster.signals import GracefulStop
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
seen = []
class Mark(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        seen.append(epoch)
    def on_train_batch_end(self, batch, logs=None):
        if len(seen) == 1 and batch == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # from SLURM ...
            os.kill(os.getpid(), signal.SIGTERM)  # ... and forwarded by the batch shell's trap
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
model.compile("sgd", "sparse_categorical_crossentropy")
try:
    model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[Mark(), GracefulStop()])
finally:
    print(json.dumps({"finished": seen}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # a third copy while the process is exiting
"""


def test_a_second_sigterm_does_not_turn_a_clean_stop_into_a_crash(tmp_path):
    # issue 12 item 9: status 143 (killed by the repeated TERM) instead of 75 in 1 of 4 SLURM runs
    script = tmp_path / "fit.py"
    script.write_text(_DOUBLE_TERM_SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert res.returncode == EXIT_INTERRUPTED, (res.returncode, res.stderr[-2000:])
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"finished": [0]}
    assert "received SIGTERM again: ignored, training is already stopping after this batch" in res.stderr
    assert "received SIGTERM again while stopping: ignored" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_signal_without_b_is_sent_to_the_batch_shell_with_a_warning(tmp_path, capsys):
    # issue 12 item 10: --signal USR1@60 (no B:) signals only job steps; our command runs in the batch shell
    assert main(["slurm", "script", "-t", "10:00", "--signal", "USR1@60", "--", "train", "--epochs", "3"]) == 0
    captured = capsys.readouterr()
    assert "#SBATCH --signal=B:USR1@60\n" in captured.out
    assert ("specclass slurm: warning: --signal=USR1@60 signals only job steps (srun), and this script runs the "
            "command in the batch shell, so the signal would never reach it: using --signal=B:USR1@60") in captured.err
    # kept as given where it does arrive: B: already, or the command is a job step (srun)
    assert main(["slurm", "script", "-t", "10:00", "--signal", "B:USR1@60", "--", "train"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["slurm", "script", "-t", "10:00", "--srun", "--signal", "USR1@60", "--", "train"]) == 0
    captured = capsys.readouterr()
    assert "#SBATCH --signal=USR1@60\n" in captured.out and "warning" not in captured.err
    # the library corrects too, and says so in the script
    text = render_script(JobSpec(signal="R:USR1@90"), ["train"])
    assert "#SBATCH --signal=BR:USR1@90\n" in text and "# note: --signal=R:USR1@90 signals only job steps" in text
