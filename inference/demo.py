"""The demo page of `app.py`: a Gradio app over the library calls of the scripts (`build_app`).

Image tab: a source image and its clean plate -> `Matting` (as inference_images.py) -> the alpha, the
foreground (RGBA) and the composite over a chosen colour or image, as PNGs laid out like the script's
output folder (com/ pha/ fgr/ composite/) and zipped for download. Video tab: a short clip and its clean
plate -> `convert_video` (as inference_video.py) -> H.264 videos com.mp4 (the composite), pha.mp4,
fgr.mp4, zipped for download. The model is the bundled demonstration model or a checkpoint the user
names or uploads, loaded by `load_model` with the backbone scale and refine mode asked for.

A user's mistake (not an image, sizes that differ, an unusable checkpoint) is shown in the page as a
`gr.Error` with the library's one-line message, never a traceback. Needs gradio (requirements-demo.txt).
"""
import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
import zipfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import gradio as gr

from common.errors import UserError, first_line
from model.model import BACKBONES
from model.refiner import REFINE_MODES

from .cli import USER_ERRORS, InputError
from .images import output_path
from .matting import COMPOSITE, DEFAULT_COMPOSITE_COLOUR, Matting, small_input_warning
from .model import DEMO_BACKBONE, DEMO_CHECKPOINT, add_model_arguments, load_model, scale_or_auto
from .plates import align_plate, check_plate
from .readers import ReplacementBackground, open_clip, read_image
from .video import convert_video
from .writers import save_images

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_SRC = os.path.join(REPOSITORY, 'samples', 'src', 'capture_640x480.jpg')
SAMPLE_BGR = os.path.join(REPOSITORY, 'samples', 'bgr', 'capture_640x480.jpg')
BUNDLED = f'bundled: {os.path.basename(DEMO_CHECKPOINT)}'
IMAGE_OUTPUTS = ('com', 'pha', 'fgr', COMPOSITE)
VIDEO_OUTPUTS = ('com', 'pha', 'fgr')
MAX_VIDEO_FRAMES = 300  # default of --max-video-frames: ten seconds at 30 fps, a few minutes on a CPU
KEPT_RESULTS = 8        # result folders kept on disk; Gradio has copied older ones into its cache
INTRO = f"""# Background Matting V2: demo
Upload a photo or a short video and its **clean plate** (the same shot without the subject, same size),
then *Matte*. The bundled model, `{os.path.basename(DEMO_CHECKPOINT)}`, was trained on synthetic data only:
it shows the pipeline working and does poorly on real photos; pick official BGMv2 weights under *Model*
for those."""


class ModelSettings(NamedTuple):
    checkpoint: str
    backbone: str
    backbone_scale: object   # 'auto' or a float
    refine_mode: str


class Models:
    """The model of the last settings asked for, loaded once with `load_model` (as the scripts load
    it: optimized, fp32, on `device_name`)."""

    def __init__(self, device_name: str):
        self.device_name = device_name
        self._key, self._loaded = None, None
        self._lock = threading.Lock()

    def get(self, settings: ModelSettings):
        """(model, device, dtype); UserError naming the checkpoint when it cannot be loaded."""
        if not os.path.isfile(settings.checkpoint):
            raise InputError(f"checkpoint {settings.checkpoint}: no such file")
        stat = os.stat(settings.checkpoint)
        key = (settings, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key != self._key:
                self._key, self._loaded = None, None  # the old model's memory goes before the new one loads
                parser = argparse.ArgumentParser()
                add_model_arguments(parser, checkpoint_required=False)
                args = parser.parse_args(['--device', self.device_name])
                args.model_checkpoint, args.model_backbone = settings.checkpoint, settings.backbone
                args.model_backbone_scale, args.model_refine_mode = settings.backbone_scale, settings.refine_mode
                try:
                    self._loaded = load_model(args)
                except ValueError as error:  # CheckpointError, and settings the model refuses
                    raise UserError(first_line(error)) from error
                self._key = key
            return self._loaded


class Workspace:
    """A temporary folder for the results, one sub-folder a request, the oldest removed beyond KEPT_RESULTS."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix='bgm-demo-')

    def new(self) -> str:
        folders = sorted((os.path.join(self.root, name) for name in os.listdir(self.root)), key=os.path.getmtime)
        for old in folders[:max(0, len(folders) - KEPT_RESULTS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return tempfile.mkdtemp(dir=self.root)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def upload(payload, what: str, names: Dict[str, str], required: bool = True) -> Optional[str]:
    """The server path of an upload (Gradio's file payload, the events run with preprocess=False so that
    our readers, not Gradio's, judge the file); its original name is recorded in `names` for messages."""
    if not payload:
        if required:
            raise InputError(f"upload {what}")
        return None
    path = payload['path'] if isinstance(payload, dict) else str(payload)
    names[path] = os.path.basename((payload.get('orig_name') if isinstance(payload, dict) else None) or path)
    return path


@contextlib.contextmanager
def shown_in_page(names: Dict[str, str]):
    """A user's mistake as a message in the page (gr.Error), its upload paths shown as the file names."""
    try:
        yield
    except USER_ERRORS as error:
        message = first_line(error)
        for path, name in names.items():
            message = message.replace(path, name)
        raise gr.Error(message, duration=None, print_exception=False) from error  # stays until closed


def model_settings(checkpoint: Optional[str], upload_payload, backbone: str, backbone_scale: str,
                   refine_mode: str, names: Dict[str, str]) -> ModelSettings:
    """The model asked for: an uploaded checkpoint, else the one chosen or typed in the dropdown."""
    path = upload(upload_payload, 'a checkpoint', names, required=False)
    if path is None:
        checkpoint = (checkpoint or BUNDLED).strip()
        path = DEMO_CHECKPOINT if checkpoint == BUNDLED else os.path.expanduser(checkpoint)
    try:
        scale = scale_or_auto((backbone_scale or 'auto').strip())
    except ValueError:
        raise InputError(f"backbone scale {backbone_scale!r}: expected 'auto' or a number in (0, 0.5]") from None
    return ModelSettings(path, backbone or DEMO_BACKBONE, scale, refine_mode or 'sampling')


def replacement(colour: Optional[str], image_payload, names: Dict[str, str]) -> ReplacementBackground:
    """What the composite shows behind the subject: the image uploaded, else the colour (its `spec` is
    what convert_video takes). Checked before the work: a bad one is a UserError."""
    image = upload(image_payload, 'a background', names, required=False)
    return ReplacementBackground(image or colour or DEFAULT_COMPOSITE_COLOUR, allow_video=False, option='background')


def zip_outputs(paths: Sequence[str], root: str, archive: str) -> str:
    """`paths` (under `root`) zipped into `archive`, keeping their relative paths; returns `archive`."""
    with zipfile.ZipFile(archive, 'w', zipfile.ZIP_STORED) as bundle:  # PNG and H.264 are compressed already
        for path in paths:
            bundle.write(path, os.path.relpath(path, root))
    return archive


def describe(model, settings: ModelSettings, size: Tuple[int, int], seconds: float, model_seconds: float,
             device, frames: int = 1) -> str:
    scale = float(getattr(model, 'backbone_scale', 1.0))
    auto = ' (auto)' if settings.backbone_scale == 'auto' else ''
    what = f'{frames} frames of ' if frames > 1 else ''
    return (f"Matted {what}{size[0]}x{size[1]} in {seconds:.2f} s (model {model_seconds:.2f} s) on {device}: "
            f"`{os.path.basename(settings.checkpoint)}`, backbone scale {scale:g}{auto}, refine mode "
            f"{settings.refine_mode}.")


def warnings_text(problems: List[str]) -> str:
    for problem in problems:
        gr.Warning(problem)
    return ''.join(f'\n\n**Warning**: {problem}' for problem in problems)


class Demo:
    """The callbacks of the page, over one model cache and one results folder."""

    def __init__(self, device_name: str = 'auto', max_video_frames: int = MAX_VIDEO_FRAMES):
        self.models = Models(device_name)
        self.workspace = Workspace()
        self.max_video_frames = max_video_frames

    def matte_image(self, src, bgr, colour, background, checkpoint, checkpoint_upload, backbone,
                    backbone_scale, refine_mode, align):
        """-> alpha PNG, foreground RGBA PNG, composite PNG, status (Markdown), zip of all."""
        names: Dict[str, str] = {}
        with shown_in_page(names):
            src_path = upload(src, 'a source image', names)
            bgr_path = upload(bgr, 'its clean plate', names)
            settings = model_settings(checkpoint, checkpoint_upload, backbone, backbone_scale, refine_mode, names)
            back = replacement(colour, background, names)
            start = time.perf_counter()
            src_image, bgr_image = read_image(src_path), read_image(bgr_path)
            if src_image.shape != bgr_image.shape:
                raise InputError(f"the source image {names[src_path]} is {src_image.shape[1]}x{src_image.shape[0]} "
                                 f"but its clean plate {names[bgr_path]} is {bgr_image.shape[1]}x"
                                 f"{bgr_image.shape[0]}: they must have the same size")
            problems = []
            if align:
                alignment = align_plate(src_image, bgr_image)
                if alignment.failure:
                    problems.append(f"the plate could not be aligned ({alignment.failure}); used as it is")
                bgr_image = alignment.plate
            problems += filter(None, [check_plate(src_image, bgr_image)])
            model, device, dtype = self.models.get(settings)
            size = (src_image.shape[1], src_image.shape[0])
            matting = Matting(model, device, dtype, IMAGE_OUTPUTS)
            images = matting(src_image[None], bgr_image, back.frame(size), label=names[src_path])
            problems += filter(None, [small_input_warning(model, src_image.shape[0], src_image.shape[1])])

            folder = self.workspace.new()
            name = os.path.splitext(names[src_path])[0] or 'image'
            paths = {t: output_path(folder, t, name) for t in IMAGE_OUTPUTS}
            save_images([(paths[t], images[t][0]) for t in IMAGE_OUTPUTS])
            archive = zip_outputs(list(paths.values()), folder, os.path.join(folder, f'{name}_matting.zip'))
            status = describe(model, settings, size, time.perf_counter() - start, matting.model_seconds, device)
            return paths['pha'], paths['com'], paths[COMPOSITE], status + warnings_text(problems), archive

    def matte_video(self, src, bgr, colour, background, checkpoint, checkpoint_upload, backbone,
                    backbone_scale, refine_mode, align, progress=gr.Progress(track_tqdm=True)):
        """-> composite video, alpha video, foreground video, status (Markdown), zip of all."""
        names: Dict[str, str] = {}
        with shown_in_page(names):
            src_path = upload(src, 'a source video', names)
            bgr_path = upload(bgr, 'its clean plate', names)
            settings = model_settings(checkpoint, checkpoint_upload, backbone, backbone_scale, refine_mode, names)
            spec = replacement(colour, background, names).spec
            with open_clip(src_path, option='the source video') as clip:
                size, frames = clip.size, clip.num_frames
            plate = read_image(bgr_path)
            if (plate.shape[1], plate.shape[0]) != size:
                raise InputError(f"the source video {names[src_path]} is {size[0]}x{size[1]} but its clean plate "
                                 f"{names[bgr_path]} is {plate.shape[1]}x{plate.shape[0]}: they must have the "
                                 "same size")
            if frames and frames > self.max_video_frames:
                raise InputError(f"the source video {names[src_path]} has {frames} frames; this page mattes up to "
                                 f"{self.max_video_frames} (app.py --max-video-frames), use inference_video.py "
                                 "for longer ones")
            model, device, dtype = self.models.get(settings)
            folder = self.workspace.new()
            throughput = convert_video(model, src_path, folder, clean_plate=bgr_path, replacement_background=spec,
                                       output_types=VIDEO_OUTPUTS, output_format='video',
                                       preprocess_alignment=bool(align), device=device, dtype=dtype)
            paths = {t: os.path.join(folder, f'{t}.mp4') for t in VIDEO_OUTPUTS}
            name = os.path.splitext(names[src_path])[0] or 'video'
            archive = zip_outputs(list(paths.values()), folder, os.path.join(folder, f'{name}_matting.zip'))
            status = describe(model, settings, size, throughput.seconds, throughput.model_seconds, device,
                              throughput.frames)
            problems = filter(None, [small_input_warning(model, size[1], size[0])])
            return paths['com'], paths['pha'], paths['fgr'], status + warnings_text(list(problems)), archive

    def close(self) -> None:
        self.workspace.close()


def build_app(demo: Demo, checkpoints: Sequence[str] = ()) -> gr.Blocks:
    """The page: model and background settings on the left, an Image and a Video tab on the right.

    `checkpoints`: more choices for the model dropdown (paths on the server), after the bundled model.
    Events (also the API of gradio_client): /matte_image and /matte_video, inputs as the callbacks'.
    """
    with gr.Blocks(title='Background Matting V2 demo', analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                with gr.Accordion('Model', open=True):
                    checkpoint = gr.Dropdown([BUNDLED, *checkpoints], value=BUNDLED, allow_custom_value=True,
                                             label='Checkpoint', elem_id='checkpoint',
                                             info='the bundled model, or type the path of a .pth or TorchScript '
                                                  'file on the server')
                    checkpoint_upload = gr.File(label='or upload a checkpoint (.pth)', file_types=['.pth', '.pt'],
                                                height=120, elem_id='checkpoint-upload')
                    backbone = gr.Dropdown(list(BACKBONES), value=DEMO_BACKBONE, label='Backbone',
                                           info='as the checkpoint was trained (TorchScript files carry theirs)')
                    backbone_scale = gr.Textbox('auto', label='Backbone scale', elem_id='backbone-scale',
                                                info="'auto' (480 px on the long side) or a number in (0, 0.5]")
                    refine_mode = gr.Dropdown(list(REFINE_MODES), value='sampling', label='Refine mode')
                    align = gr.Checkbox(False, label='Align the plate onto the source (the camera moved a little)')
                with gr.Accordion('Composite background', open=True):
                    colour = gr.ColorPicker(DEFAULT_COMPOSITE_COLOUR, label='Colour', elem_id='colour')
                    background = gr.Image(type='filepath', label='or an image (scaled to cover)', height=140,
                                          sources=['upload'], elem_id='background')
            with gr.Column(scale=3):
                settings = [colour, background, checkpoint, checkpoint_upload, backbone, backbone_scale,
                            refine_mode, align]
                with gr.Tab('Image'):
                    with gr.Row():
                        src = gr.Image(type='filepath', label='Source', sources=['upload'], height=300,
                                       elem_id='src-image')
                        bgr = gr.Image(type='filepath', label='Clean plate', sources=['upload'], height=300,
                                       elem_id='bgr-image')
                    run_image = gr.Button('Matte the image', variant='primary', elem_id='matte-image')
                    status = gr.Markdown(label='Status', elem_id='image-status')
                    with gr.Row():
                        alpha = gr.Image(label='Alpha', format='png', interactive=False, elem_id='alpha')
                        foreground = gr.Image(label='Foreground (RGBA)', format='png', interactive=False,
                                              elem_id='foreground')
                        composite = gr.Image(label='Composite', format='png', interactive=False,
                                             elem_id='composite')
                    download = gr.DownloadButton('Download the outputs (zip)', elem_id='download-image')
                    gr.Examples([[SAMPLE_SRC, SAMPLE_BGR]], inputs=[src, bgr], label='Bundled sample')
                    run_image.click(demo.matte_image, [src, bgr, *settings],
                                    [alpha, foreground, composite, status, download],
                                    api_name='matte_image', preprocess=False, concurrency_id='model')
                with gr.Tab('Video'):
                    with gr.Row():
                        video_src = gr.Video(label=f'Source video (up to {demo.max_video_frames} frames)',
                                             sources=['upload'], height=300, elem_id='src-video')
                        video_bgr = gr.Image(type='filepath', label='Clean plate (an image)', sources=['upload'],
                                             height=300, elem_id='bgr-video')
                    run_video = gr.Button('Matte the video', variant='primary', elem_id='matte-video')
                    video_status = gr.Markdown(label='Status', elem_id='video-status')
                    with gr.Row():
                        video_composite = gr.Video(label='Composite', interactive=False, elem_id='composite-video')
                        video_alpha = gr.Video(label='Alpha', interactive=False, elem_id='alpha-video')
                        video_foreground = gr.Video(label='Foreground', interactive=False,
                                                    elem_id='foreground-video')
                    video_download = gr.DownloadButton('Download the outputs (zip)', elem_id='download-video')
                    run_video.click(demo.matte_video, [video_src, video_bgr, *settings],
                                    [video_composite, video_alpha, video_foreground, video_status, video_download],
                                    api_name='matte_video', preprocess=False, concurrency_id='model')
    return app
