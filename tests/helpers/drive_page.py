"""Loads a running app.py in Debian's headless Chromium with Playwright and uses it as a person would:
upload the sample pair, click the button, wait for the result, download it; then a bad upload and its
message. Run by tests/test_app.py under the demo's Python (.venv-demo, which has playwright; its own
browser download is not used). Checks nothing itself: writes --out/report.json, result.png (the page with
the result), error.png (the message) and download.zip, which the test reads.

    .venv-demo/bin/python tests/helpers/drive_page.py http://127.0.0.1:7860/ --out /tmp/page \\
        --src samples/src/capture_640x480.jpg --bgr samples/bgr/capture_640x480.jpg --bad bad.png

Only the app's own address is reached: Chromium resolves no other host name, and any request for
another address is aborted and listed in the report (`blocked`).
"""
import argparse
import json
import os
import tempfile
import time
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

CHROMIUM = '/usr/bin/chromium'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1']
PAGE_TIMEOUT = 60_000     # ms, for the page and its elements
RESULT_TIMEOUT = 240_000  # ms, for a matting on a slow CPU

# The result image once it has loaded: its natural size, or null.
LOADED_SIZE = """selector => {
    const image = document.querySelector(selector);
    return image && image.complete && image.naturalWidth ? [image.naturalWidth, image.naturalHeight] : null;
}"""


def upload(page, elem_id: str, path: str) -> None:
    page.locator(f'#{elem_id} input[type=file]').set_input_files(path)
    # The preview appears once the file is on the server.
    page.locator(f'#{elem_id} img').first.wait_for(state='attached', timeout=PAGE_TIMEOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('url')
    parser.add_argument('--out', required=True)
    parser.add_argument('--src', required=True)
    parser.add_argument('--bgr', required=True)
    parser.add_argument('--bad', required=True, help='a file named .png that is not an image')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    own_host = urlparse(args.url).hostname
    report = {'blocked': [], 'console_errors': []}

    def route(request_route):
        if urlparse(request_route.request.url).hostname in (own_host, None):
            request_route.continue_()
        else:
            report['blocked'].append(request_route.request.url)
            request_route.abort()

    with tempfile.TemporaryDirectory(prefix='bgm-chromium-') as profile, sync_playwright() as playwright:
        # A fresh profile (--user-data-dir, which Playwright sets from its first argument).
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={'width': 1400, 'height': 1100})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.on('console', lambda message: message.type == 'error' and report['console_errors'].append(
                message.text))
            page.route('**/*', route)
            start = time.perf_counter()
            page.goto(args.url, timeout=PAGE_TIMEOUT)
            page.locator('#matte-image').wait_for(timeout=PAGE_TIMEOUT)
            report['title'] = page.title()
            report['load_seconds'] = time.perf_counter() - start
            report['headings'] = page.locator('h1').all_inner_texts()

            upload(page, 'src-image', args.src)
            upload(page, 'bgr-image', args.bgr)
            start = time.perf_counter()
            page.locator('#matte-image').click()
            for elem_id in ('alpha', 'foreground', 'composite'):
                page.wait_for_function(LOADED_SIZE, arg=f'#{elem_id} img', timeout=RESULT_TIMEOUT)
                report[f'{elem_id}_size'] = page.evaluate(LOADED_SIZE, f'#{elem_id} img')
            report['result_seconds'] = time.perf_counter() - start
            report['status'] = page.locator('#image-status').inner_text()
            page.screenshot(path=os.path.join(args.out, 'result.png'), full_page=True)
            with page.expect_download(timeout=PAGE_TIMEOUT) as download:
                page.locator('#download-image').click()
            report['download_name'] = download.value.suggested_filename
            report['download'] = os.path.join(args.out, 'download.zip')
            download.value.save_as(report['download'])

            # A bad upload on a fresh page: its message in the page, no traceback.
            page.reload(timeout=PAGE_TIMEOUT)
            page.locator('#matte-image').wait_for(timeout=PAGE_TIMEOUT)
            page.locator('#src-image input[type=file]').set_input_files(args.bad)
            upload(page, 'bgr-image', args.bgr)
            page.locator('#matte-image').click()
            message = page.get_by_text('not a readable image').first
            message.wait_for(timeout=RESULT_TIMEOUT)
            report['error_message'] = message.inner_text()
            report['page_text_after_error'] = page.locator('body').inner_text()
            page.wait_for_timeout(1000)  # the message slides in; the screenshot shows the viewport, where it is
            page.screenshot(path=os.path.join(args.out, 'error.png'))
        finally:
            browser.close()
    with open(os.path.join(args.out, 'report.json'), 'w') as file:
        json.dump(report, file, indent=1)


if __name__ == '__main__':
    main()
