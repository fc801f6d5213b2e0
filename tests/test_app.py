"""app.py, the demo page, for real: the app started on 127.0.0.1 with the demo's own Python (.venv-demo,
requirements-demo.txt), driven by gradio_client as a program would (tests/helpers/drive_demo.py) and by
Debian's headless Chromium as a person would (tests/helpers/drive_page.py, Playwright).

Skips, saying why, without a demo Python (BGM_DEMO_PYTHON, else ROOT/.venv-demo/bin/python, with gradio)
or, for the page, without /usr/bin/chromium; .ci/run installs both.
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import zipfile

import av
import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_PYTHON = os.environ.get('BGM_DEMO_PYTHON') or os.path.join(ROOT, '.venv-demo', 'bin', 'python')
CHROMIUM = '/usr/bin/chromium'
HELPERS = os.path.join(ROOT, 'tests', 'helpers')
SAMPLE_SRC = os.path.join(ROOT, 'samples', 'src', 'capture_640x480.jpg')
SAMPLE_BGR = os.path.join(ROOT, 'samples', 'bgr', 'capture_640x480.jpg')
START_TIMEOUT = 180   # seconds for the app to answer (torch and gradio imported on 2 busy cores)
DRIVER_TIMEOUT = 540  # seconds for one driver, all its requests together
VIDEO_FRAMES = 4


def demo_python() -> str:
    """The demo's Python, or a skip saying what is missing."""
    if not os.access(DEMO_PYTHON, os.X_OK):
        pytest.skip(f"no demo Python at {DEMO_PYTHON} (set BGM_DEMO_PYTHON, or: python3 -m venv .venv-demo && "
                    ".venv-demo/bin/python -m pip install -r requirements-demo.txt)")
    check = subprocess.run([DEMO_PYTHON, '-c', 'import gradio, gradio_client, playwright'], capture_output=True,
                           text=True, timeout=120)
    if check.returncode != 0:
        pytest.skip(f"{DEMO_PYTHON} lacks the demo's packages (pip install -r requirements-demo.txt): "
                    f"{check.stderr.strip().splitlines()[-1:]}")
    return DEMO_PYTHON


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with status {process.returncode}:\n{read(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"app.py did not answer at {url} within {START_TIMEOUT} s:\n{read(log_path)}")


def read(path: str) -> str:
    with open(path, errors='replace') as file:
        return file.read()[-5000:]


@pytest.fixture(scope='module')
def app(tmp_path_factory):
    """(url, folder): app.py serving on a free 127.0.0.1 port, its temporary files under folder; stopped
    (SIGTERM, then SIGKILL) at the end whatever happened."""
    python = demo_python()
    folder = tmp_path_factory.mktemp('app')
    (folder / 'tmp').mkdir()
    port = free_port()
    url = f'http://127.0.0.1:{port}/'
    log_path = str(folder / 'app.log')
    env = dict(os.environ, TMPDIR=str(folder / 'tmp'), GRADIO_TEMP_DIR=str(folder / 'gradio'),
               GRADIO_ANALYTICS_ENABLED='False', PYTHONUNBUFFERED='1')
    with open(log_path, 'w') as log:
        process = subprocess.Popen([python, os.path.join(ROOT, 'app.py'), '--host', '127.0.0.1', '--port', str(port),
                                    '--device', 'cpu'], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_until_serving(url, process, log_path)
        yield url, folder
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
    assert 'Traceback' not in read(log_path), read(log_path)  # user errors are messages, not tracebacks
    assert not list((folder / 'tmp').glob('bgm-demo-*')), 'app.py left its results folder behind'


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """The bad uploads and a short clip: a text file named .png, a plate of another size, 4 frames of the
    sample source as H.264."""
    folder = tmp_path_factory.mktemp('inputs')
    (folder / 'bad.png').write_text('this is not an image\n')
    with Image.open(SAMPLE_BGR) as plate:
        plate.resize((320, 240)).save(folder / 'small.png')
    with Image.open(SAMPLE_SRC) as image:
        src = np.asarray(image.convert('RGB'))
    with av.open(str(folder / 'clip.mp4'), 'w') as container:
        stream = container.add_stream('libx264', rate=10)
        stream.width, stream.height, stream.pix_fmt = src.shape[1], src.shape[0], 'yuv420p'
        for index in range(VIDEO_FRAMES):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(src, 2 * index, axis=1)), format='rgb24')
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return folder


def drive(script: str, url: str, out, *argv) -> dict:
    """Runs a driver under the demo's Python; its report.json."""
    result = subprocess.run([DEMO_PYTHON, os.path.join(HELPERS, script), url, '--out', str(out), *map(str, argv)],
                            cwd=ROOT, capture_output=True, text=True, timeout=DRIVER_TIMEOUT)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    with open(os.path.join(out, 'report.json')) as file:
        return json.load(file)


def image(path) -> np.ndarray:
    with Image.open(path) as opened:
        return np.asarray(opened)


def test_client_mattes_the_sample_and_explains_bad_uploads(app, inputs, tmp_path):
    url, _ = app
    report = drive('drive_demo.py', url, tmp_path, '--src', SAMPLE_SRC, '--bgr', SAMPLE_BGR,
                   '--bad', inputs / 'bad.png', '--small-plate', inputs / 'small.png', '--video', inputs / 'clip.mp4')

    alpha_path, foreground_path, composite_path, status, archive = report['image']
    alpha, foreground, composite = image(alpha_path), image(foreground_path), image(composite_path)
    assert alpha.shape == (480, 640)
    assert alpha.min() == 0 and alpha.max() == 255 and alpha.std() > 20  # a subject, and a background
    assert foreground.shape == (480, 640, 4) and np.array_equal(foreground[..., 3], alpha)
    assert composite.shape == (480, 640, 3)
    # Where alpha is 0 the composite is the chosen colour (#3366ff), where it is 255 the foreground (both
    # within rounding: 255 is alpha >= 254.5 / 255).
    assert np.abs(composite[alpha == 0].astype(int) - [0x33, 0x66, 0xff]).max() <= 1
    assert np.abs(composite[alpha == 255].astype(int) - foreground[alpha == 255][:, :3]).max() <= 1
    assert 'Matted 640x480' in status and 'on cpu' in status
    with zipfile.ZipFile(archive) as bundle:
        assert sorted(bundle.namelist()) == sorted(f'{t}/capture_640x480.png' for t in ('com', 'pha', 'fgr',
                                                                                          'composite'))
        assert np.array_equal(np.asarray(Image.open(bundle.open('pha/capture_640x480.png'))), alpha)

    # Over a picture (the plate itself): the background shows the plate where alpha is 0.
    over = image(report['image_over_picture'][2])
    assert np.abs(over[alpha == 0].astype(int) - image(SAMPLE_BGR)[alpha == 0]).mean() < 3

    composite_video, alpha_video, foreground_video, video_status, video_archive = report['video']
    with av.open(alpha_video) as container:
        frames = [frame.to_ndarray(format='gray') for frame in container.decode(video=0)]
    assert len(frames) == VIDEO_FRAMES and frames[0].shape == (480, 640) and frames[0].std() > 20
    assert f'Matted {VIDEO_FRAMES} frames of 640x480' in video_status
    with zipfile.ZipFile(video_archive) as bundle:
        assert sorted(bundle.namelist()) == ['com.mp4', 'fgr.mp4', 'pha.mp4']

    errors = report['errors']
    assert errors['not_an_image'].startswith("bad.png: not a readable image")
    assert errors['sizes'] == ("the source image capture_640x480.jpg is 640x480 but its clean plate small.png is "
                               "320x240: they must have the same size")
    assert 'bad.png' in errors['not_a_checkpoint'] and 'not a PyTorch weight file' in errors['not_a_checkpoint']
    assert errors['backbone_scale'] == "backbone scale 'huge': expected 'auto' or a number in (0, 0.5]"
    assert errors['no_plate'] == 'upload its clean plate'
    assert errors['video_sizes'].startswith('the source video clip.mp4 is 640x480 but its clean plate small.png')
    assert not any('Traceback' in message for message in errors.values())


def test_page_renders_and_shows_the_result(app, tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no {CHROMIUM} (Debian package chromium) for the headless browser")
    url, _ = app
    bad = tmp_path / 'bad.png'
    bad.write_text('this is not an image\n')
    report = drive('drive_page.py', url, tmp_path, '--src', SAMPLE_SRC, '--bgr', SAMPLE_BGR, '--bad', bad)

    assert report['title'] == 'Background Matting V2 demo'
    assert report['headings'] == ['Background Matting V2: demo']
    for name in ('alpha', 'foreground', 'composite'):
        assert report[f'{name}_size'] == [640, 480], name
    assert report['status'].startswith('Matted 640x480')
    assert report['download_name'] == 'capture_640x480_matting.zip'
    with zipfile.ZipFile(report['download']) as bundle:
        assert 'pha/capture_640x480.png' in bundle.namelist()
    assert report['error_message'].startswith('bad.png: not a readable image')
    assert 'Traceback' not in report['page_text_after_error']
    assert report['blocked'] == [], 'the page asked for addresses outside the app'
    screenshot = image(tmp_path / 'result.png')
    assert screenshot.shape[0] > 600 and screenshot.shape[1] == 1400
