"""The demo page: a Gradio app that mattes an image or a short video with its clean plate in the browser.

Upload a source and its clean plate, pick the model (the bundled demonstration model, a checkpoint on the
server or an uploaded one; backbone scale, refine mode), and the page shows the alpha, the foreground
and a composite over a chosen colour or image, with a button to download them. It calls what the scripts
call (inference.matting.Matting, inference.video.convert_video; see inference/demo.py) and runs on a CPU.

It needs its own environment, requirements-demo.txt (gradio wants pillow<13, the core pins 13):

    python3 -m venv .venv-demo && .venv-demo/bin/python -m pip install -r requirements-demo.txt
    .venv-demo/bin/python app.py                      # then open http://127.0.0.1:7860

Example with official weights, on a GPU:

    .venv-demo/bin/python app.py --device cuda --port 8080 \\
        --checkpoint pytorch_resnet50.pth --checkpoint pytorch_mobilenetv2.pth

The page listens on 127.0.0.1 only unless --host says otherwise: whoever reaches it can read any
checkpoint path on this machine into the model (the dropdown takes typed paths).
"""
import argparse
import atexit
import os
import signal
import sys

from common.devices import check_device_name, resolve_device
from common.errors import UserError, exit_with_error

REPOSITORY = os.path.dirname(os.path.abspath(__file__))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=os.path.basename(__file__),
                                     description='The demo page of Background Matting V2 (Gradio).',
                                     epilog=__doc__.split('\n\n', 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=7860, help='default 7860')
    parser.add_argument('--device', default='auto', type=check_device_name,
                        help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument('--checkpoint', action='append', default=[], metavar='PATH',
                        help='a checkpoint to offer in the model dropdown, after the bundled model (repeatable)')
    parser.add_argument('--max-video-frames', type=int, metavar='N',
                        help='longest video the page mattes, in frames (default 300)')
    return parser


def main(argv=None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.max_video_frames is not None and args.max_video_frames < 1:
        parser.error('--max-video-frames must be at least 1')
    for path in args.checkpoint:
        if not os.path.isfile(path):
            parser.error(f'--checkpoint {path}: no such file')
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no telemetry, no version check
    try:
        import gradio  # noqa: F401
    except ImportError:
        exit_with_error(parser.prog, 'gradio is not installed in this Python; the demo has its own environment: '
                                     'python3 -m venv .venv-demo && .venv-demo/bin/python -m pip install -r '
                                     'requirements-demo.txt, then .venv-demo/bin/python app.py')
    from inference.demo import MAX_VIDEO_FRAMES, Demo, build_app
    try:
        resolve_device(args.device)
    except UserError as error:
        exit_with_error(parser.prog, error)

    demo = Demo(args.device, args.max_video_frames or MAX_VIDEO_FRAMES)
    atexit.register(demo.close)
    # SIGTERM (kill, a test's terminate) ends the server like Ctrl-C, so the results folder is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    app = build_app(demo, [os.path.abspath(path) for path in args.checkpoint])
    print(f"Serving on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    app.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, show_error=False, quiet=True, ssr_mode=False,
        mcp_server=False, allowed_paths=[os.path.join(REPOSITORY, 'samples')])


if __name__ == '__main__':
    main()
