"""Checkpoints by URL (model.downloads), against an HTTP server on 127.0.0.1: a good file is downloaded
once into torch.hub's cache ($TORCH_HOME) and verified; a wrong hash, a cut connection, a 404 and no
server leave nothing in the cache and say so in one line naming the URL."""
import hashlib
import http.server
import os
import threading

import pytest
import torch

import inference_images
from model import MattingRefine
from model.downloads import DownloadError, local_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Handler(http.server.BaseHTTPRequestHandler):
    files = {}   # path -> bytes
    cut = set()  # paths sent half, then the connection closed
    requests = []

    def do_GET(self):
        Handler.requests.append(self.path)
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404, 'Not Found')
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2] if self.path in self.cut else data)
        self.wfile.flush()
        if self.path in self.cut:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch-home'))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    torch.manual_seed(0)
    path = tmp_path / 'refine.pth'
    torch.save(MattingRefine('mobilenetv2').state_dict(), path)
    data = path.read_bytes()
    Handler.files = {'/w/refine.pth': data, '/w/cut.pth': data}
    Handler.cut, Handler.requests = {'/w/cut.pth'}, []
    try:
        yield f'http://127.0.0.1:{httpd.server_address[1]}', hashlib.sha256(data).hexdigest()
    finally:
        httpd.shutdown()
        httpd.server_close()


def cache_files(tmp_path):
    folder = tmp_path / 'torch-home' / 'hub' / 'checkpoints'
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_a_good_file_is_downloaded_once_and_verified(server, tmp_path):
    base, sha = server
    path = local_checkpoint(f'{base}/w/refine.pth#sha256={sha}')
    assert path == str(tmp_path / 'torch-home' / 'hub' / 'checkpoints' / 'refine.pth')
    assert local_checkpoint(f'{base}/w/refine.pth#sha256={sha}') == path
    assert Handler.requests == ['/w/refine.pth']  # the second time from the cache
    model = MattingRefine('mobilenetv2')
    model.load_state_dict(torch.load(path, weights_only=True))
    assert local_checkpoint(str(tmp_path / 'refine.pth')) == str(tmp_path / 'refine.pth')  # a path as it is


@pytest.mark.parametrize('case', ['wrong hash', 'cut connection', '404', 'no server', 'no hash'])
def test_a_failed_download_leaves_nothing_and_names_the_url(server, tmp_path, case):
    base, sha = server
    url = {'wrong hash': f'{base}/w/refine.pth#sha256={"0" * 64}', 'cut connection': f'{base}/w/cut.pth#sha256={sha}',
           '404': f'{base}/w/missing.pth#sha256={sha}', 'no server': f'http://127.0.0.1:9/w/refine.pth#sha256={sha}',
           'no hash': f'{base}/w/refine.pth'}[case]
    expected = {'wrong hash': 'did not match sha256', 'cut connection': 'did not match sha256',
                '404': 'HTTP 404', 'no server': 'cannot download .*put it at', 'no hash': 'no sha256 is known'}[case]
    with pytest.raises(DownloadError, match=expected) as error:
        local_checkpoint(url)
    assert url.split('#')[0] in str(error.value) and '\n' not in str(error.value)
    assert cache_files(tmp_path) == []


def test_the_scripts_take_a_url(server, tmp_path, capsys):
    base, sha = server
    src = os.path.join(ROOT, 'samples', 'src', 'capture_640x480.jpg')
    bgr = os.path.join(ROOT, 'samples', 'bgr', 'capture_640x480.jpg')
    inference_images.main(['--model-checkpoint', f'{base}/w/refine.pth#sha256={sha}', '--src', src, '--bgr', bgr,
                           '--output-dir', str(tmp_path / 'out'), '--output-types', 'pha', '--device', 'cpu',
                           '--disable-progress'])
    assert os.listdir(tmp_path / 'out' / 'pha') == ['capture_640x480.png']
    with pytest.raises(SystemExit) as exit:
        inference_images.main(['--model-checkpoint', f'{base}/w/missing.pth#sha256={sha}', '--src', src, '--bgr', bgr,
                               '--output-dir', str(tmp_path / 'out2'), '--device', 'cpu'])
    assert exit.value.code == 1 and 'HTTP 404' in capsys.readouterr().err
