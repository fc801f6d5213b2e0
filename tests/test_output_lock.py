"""One run per output folder (common.files.OutputLock): a second run into a folder that a first one is
writing into is refused with one line naming the first; a lock left by a run that died is taken over."""
import json
import os
import socket
import subprocess
import sys

import pytest

import inference_images
import inference_video
from common.errors import UserError
from common.files import LOCK_NAME, FolderTaken, OutputLock
from common.shards import Shard
from test_inference_utils import composite_subject, leftovers, model_args, save_png, textured_plate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dead_pid():
    """The pid of a process that has ended (and was reaped)."""
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def write_lock(folder, **holder):
    folder.mkdir(parents=True, exist_ok=True)
    record = dict(pid=dead_pid(), host=socket.gethostname(), command='python inference_images.py --earlier',
                  started='2025-01-01 10:00:00 +0000', nonce='x')
    record.update(holder)
    (folder / LOCK_NAME).write_text(json.dumps(record))
    return record


def run(module, *argv):
    try:
        module.main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code
    return 0


def test_the_lock_names_its_holder_refuses_a_second_run_and_is_gone_after(tmp_path):
    out = tmp_path / 'new' / 'out'
    with OutputLock(str(out)) as lock:
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
        assert holder['command'] and holder['started'] and lock.path == str(out / LOCK_NAME)
        with pytest.raises(UserError) as refused:
            OutputLock(str(out)).acquire()
        message = str(refused.value)
        assert '\n' not in message and message.startswith(f'--output-dir {out}: another run is writing there')
        assert f'pid {os.getpid()} on {socket.gethostname()}, started {holder["started"]}' in message
        assert str(out / LOCK_NAME) in message
    # Released; the folders it made, left empty, are removed too: a run that fails early leaves nothing.
    assert not (tmp_path / 'new').exists()
    # Unless the run took them as its output folder (as after its model loaded): then they stay.
    from inference.files import prepare_output_dir
    with OutputLock(str(out)):
        prepare_output_dir(str(out))
    assert os.listdir(out) == []
    os.rmdir(out)
    out.mkdir(parents=True)
    with OutputLock(str(out)):
        (out / 'result.png').write_bytes(b'kept')
    assert os.listdir(out) == ['result.png']


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_note(tmp_path, capsys):
    earlier = write_lock(tmp_path / 'out')
    with OutputLock(str(tmp_path / 'out')):
        assert json.loads((tmp_path / 'out' / LOCK_NAME).read_text())['pid'] == os.getpid()
    err = capsys.readouterr().err
    assert 'taking over the lock of a run that is no longer running' in err and f"pid {earlier['pid']}" in err
    # A pid that runs again, but is another process (it started at another time): stale too.
    write_lock(tmp_path / 'out', pid=os.getpid(), pid_start='1')
    with OutputLock(str(tmp_path / 'out')):
        pass
    assert 'taking over' in capsys.readouterr().err
    # Another host's run cannot be checked from here: trusted, and the message says what to delete.
    write_lock(tmp_path / 'out', host='elsewhere.example')
    with pytest.raises(UserError, match=f'on elsewhere.example.*if that run is over, delete .*{LOCK_NAME}'):
        OutputLock(str(tmp_path / 'out')).acquire()


def test_the_shards_of_one_array_share_a_folder_and_nothing_else_does(tmp_path):
    folder = str(tmp_path / 'out')
    with OutputLock(folder, Shard(1, 3)), OutputLock(folder, Shard(2, 3)), OutputLock(folder, Shard(3, 3)):
        for other in (None, Shard(2, 3), Shard(1, 4)):   # all of it, the same shard, overlapping shards
            with pytest.raises(UserError, match='another run is writing there'):
                OutputLock(folder, other).acquire()
    with OutputLock(folder):
        with pytest.raises(UserError, match='another run is writing there'):
            OutputLock(folder, Shard(1, 2)).acquire()
    assert not os.path.exists(folder)


def test_a_new_default_folder_made_by_another_run_meanwhile_is_reported(tmp_path):
    (tmp_path / 'taken').mkdir()
    with pytest.raises(FolderTaken):
        OutputLock(str(tmp_path / 'taken'), new=True).acquire()
    assert inference_images.free_folder(str(tmp_path / 'taken')) == str(tmp_path / 'taken-2')


@pytest.fixture
def pair(tmp_path):
    plate = textured_plate(96, 64)
    save_png(tmp_path / 'src' / 'a.png', composite_subject(plate)[0])
    save_png(tmp_path / 'bgr' / 'a.png', plate)
    return ['--src', tmp_path / 'src', '--bgr', tmp_path / 'bgr']


def test_a_second_images_run_into_a_folder_in_use_is_refused(tmp_path, pair, checkpoint, capsys):
    """Two runs with different models started together on one --output-dir both passed the check for
    existing outputs before either wrote, and the second silently replaced the first's outputs."""
    out = tmp_path / 'out'
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; from common.files import OutputLock; '
                               'OutputLock(sys.argv[1]).acquire(); print("held", flush=True); time.sleep(120)',
         str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        assert run(inference_images, *pair, '--output-dir', out, '--output-types', 'pha', '--disable-progress',
                   *model_args(checkpoint)) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith('warning:')]
        assert len(err) == 1 and f'--output-dir {out}: another run is writing there (pid {holder.pid} ' in err[0], err
        assert os.listdir(out) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    # Killed: its lock stays behind, and the next run takes it over.
    assert run(inference_images, *pair, '--output-dir', out, '--output-types', 'pha', '--disable-progress',
               *model_args(checkpoint)) == 0
    assert 'taking over the lock' in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ['pha'] and not leftovers(out)


def test_a_second_video_run_into_a_folder_in_use_is_refused(tmp_path, checkpoint, capsys):
    (tmp_path / 'take.mp4').write_bytes(b'never read: the folder is refused first')
    (tmp_path / 'plate.png').write_bytes(b'')
    with OutputLock(str(tmp_path / 'out')):
        assert run(inference_video, '--video-src', tmp_path / 'take.mp4', '--video-bgr', tmp_path / 'plate.png',
                   '--output-dir', tmp_path / 'out', *model_args(checkpoint)) == 1
    assert f'--output-dir {tmp_path / "out"}: another run is writing there (pid {os.getpid()}' in \
        capsys.readouterr().err
