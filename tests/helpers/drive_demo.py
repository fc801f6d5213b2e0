"""Drives a running app.py with gradio_client, as a program would; run by tests/test_app.py under the demo's
Python (.venv-demo, which has gradio_client). Checks nothing itself: it copies what came back into --out
and writes --out/report.json, which the test reads.

    .venv-demo/bin/python tests/helpers/drive_demo.py http://127.0.0.1:7860/ --out /tmp/drive \\
        --src samples/src/capture_640x480.jpg --bgr samples/bgr/capture_640x480.jpg \\
        --bad bad.png --small-plate small.png --video clip.mp4

report.json: {"image": [alpha, foreground, composite, status, zip] (paths in --out), "video": [...] or
absent, "errors": {"not_an_image": message, "sizes": message, ...}: the message each bad request got}.
"""
import argparse
import json
import os
import shutil
import time

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

BUNDLED = 'bundled: mattingrefine_mobilenetv2_synthetic_fp16.pth'
TIMEOUT = 240  # seconds for one request, at most


def settings(colour='#ffffff', background=None, checkpoint=BUNDLED, upload=None, scale='auto'):
    """The inputs after the source and the plate, in the order of the page's events."""
    return [colour, background, checkpoint, upload, 'mobilenetv2', scale, 'sampling', False]


def call(client: Client, api_name: str, inputs) -> list:
    job = client.submit(*inputs, api_name=api_name)
    return list(job.result(timeout=TIMEOUT))


def error_of(client: Client, api_name: str, inputs) -> str:
    """The message a request that must fail was answered with ('' if it did not fail)."""
    try:
        call(client, api_name, inputs)
    except AppError as error:
        return str(error)
    return ''


def kept(paths, out: str, prefix: str) -> list:
    """The files gradio_client downloaded, copied into `out` as prefix_<name>; other values as they are."""
    result = []
    for index, value in enumerate(paths):
        if isinstance(value, str) and os.path.isfile(value):
            target = os.path.join(out, f'{prefix}{index}_{os.path.basename(value)}')
            shutil.copyfile(value, target)
            value = target
        result.append(value)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('url')
    parser.add_argument('--out', required=True)
    parser.add_argument('--src', required=True)
    parser.add_argument('--bgr', required=True)
    parser.add_argument('--bad', required=True, help='a file named .png that is not an image')
    parser.add_argument('--small-plate', required=True, help='a plate of another size than --src')
    parser.add_argument('--video', help='a short clip of --src size, matted with --bgr as its plate')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    downloads = os.path.join(args.out, 'downloads')
    client = Client(args.url, verbose=False, download_files=downloads)
    src, bgr = handle_file(args.src), handle_file(args.bgr)

    report = {}
    start = time.perf_counter()
    report['image'] = kept(call(client, '/matte_image', [src, bgr, *settings(colour='#3366ff')]), args.out, 'image')
    report['image_seconds'] = time.perf_counter() - start
    report['image_over_picture'] = kept(call(client, '/matte_image', [src, bgr, *settings(background=bgr)]),
                                        args.out, 'over')
    if args.video:
        report['video'] = kept(call(client, '/matte_video', [handle_file(args.video), bgr, *settings()]),
                               args.out, 'video')
    report['errors'] = {
        'not_an_image': error_of(client, '/matte_image', [handle_file(args.bad), bgr, *settings()]),
        'sizes': error_of(client, '/matte_image', [src, handle_file(args.small_plate), *settings()]),
        'not_a_checkpoint': error_of(client, '/matte_image', [src, bgr, *settings(upload=handle_file(args.bad))]),
        'backbone_scale': error_of(client, '/matte_image', [src, bgr, *settings(scale='huge')]),
        'no_plate': error_of(client, '/matte_image', [src, None, *settings()]),
    }
    if args.video:
        report['errors']['video_sizes'] = error_of(
            client, '/matte_video', [handle_file(args.video), handle_file(args.small_plate), *settings()])
    with open(os.path.join(args.out, 'report.json'), 'w') as file:
        json.dump(report, file, indent=1)


if __name__ == '__main__':
    main()
