"""The demonstration model in one command, within a given number of minutes (scripts/train_demo.sh runs it).

    python -m scripts.train_demo --device cuda --minutes 6 --out output/demo-gpu
    python -m scripts.train_demo --device cpu --minutes 1 --preset tiny --out output/demo-tiny   # a smoke run

What the README's "The demonstration model" does by hand, end to end:
    1. synthetic data: training foregrounds (640x480 for the base stage, 512x512 for the refine stage,
       several generator processes at once), and, beside the training, 16 held-out capture pairs at
       1280x720 (seed 1) and 16 more to tune difference keying on (seed 0), then the keying itself;
    2. train_base.py, then train_refine.py from its weights, each with AMP (fp16 with a GradScaler on
       CUDA) and channels-last, from scratch. The minutes left after the data, less a reserve for
       the evaluation, are split between the stages (--base-share): each stage first runs a short
       warm-up, whose steps per second set --max-steps and the length of the cosine learning rate
       schedule; the run resumes from the warm-up's checkpoint, and a SIGTERM at the end of the
       stage's time stops it there if it is slower than planned (the trainer saves and stops, as
       when a cluster preempts it);
    3. scripts/release_weights.py: the float16 weights;
    4. inference_images.py on the held-out captures, evaluate.py on its alphas and on the keying's,
       and the table of the README: SAD and MSE in the unknown region, MAD and MSE over the frame.

Everything goes to --out (a new or empty folder): data/, checkpoint/, log/, the weights
mattingrefine_mobilenetv2_demo_fp16.pth, heldout-model/, heldout-keying/, results/ and results.json.

Stopped from outside (SIGTERM: `kill`, Slurm's scancel or time limit; SIGINT: Ctrl-C; SIGUSR1), the
recipe stops where it is, as the trainers do: a stage in training saves its checkpoint first, the
processes it started are ended, results.json records what was done and where it stopped
("stopped": the signal), and it exits with 128 + the signal's number (143 for SIGTERM), saying so.
Its own SIGTERM at the end of a stage's budget (above) is told apart and does not stop it.
"""
import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # run as `python -m scripts.train_demo` from here

WEIGHTS_NAME = 'mattingrefine_mobilenetv2_demo_fp16.pth'
KINDS = ('fgr', 'pha', 'bgr')

# Settings of a run: data sizes, the stages' options (the README's one-hour recipe, on a GPU's budget),
# warm-up steps and the seconds kept for the release and the evaluation.
PRESETS = {
    'gpu': dict(
        base_data=dict(count=400, size=(640, 480)), refine_data=dict(count=400, size=(512, 512)),
        evaluation=dict(captures=16, size=(1280, 720)),
        base=['--batch-size', '8', '--sample-size', '320', '--crop-min', '192', '--crop-max', '320',
              '--lr-backbone', '5e-4', '--lr-aspp', '1e-3', '--lr-decoder', '1e-3', '--lr-warmup-steps', '100'],
        refine=['--batch-size', '4', '--sample-size', '768', '--crop-min', '384', '--crop-max', '512',
                '--model-refine-sample-pixels', '20000', '--lr-backbone', '2e-4', '--lr-aspp', '4e-4',
                '--lr-decoder', '4e-4', '--lr-refiner', '5e-4', '--lr-warmup-steps', '50'],
        workers=max(2, min(12, (os.cpu_count() or 4) - 4)), warmup_steps=40, log_interval=10, reserve_s=60),
    'tiny': dict(
        # 40 samples: an epoch of a few steps would spend the run writing its end-of-epoch checkpoints.
        base_data=dict(count=40, size=(96, 96)), refine_data=dict(count=40, size=(96, 96)),
        evaluation=dict(captures=2, size=(128, 96)),
        base=['--batch-size', '2', '--sample-size', '64', '--crop-min', '63', '--crop-max', '64'],
        refine=['--batch-size', '2', '--sample-size', '96', '--crop-min', '92', '--crop-max', '96',
                '--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '1600'],
        workers=0, warmup_steps=2, log_interval=1, reserve_s=10),
}


def option(arguments: list, name: str) -> str:
    """The value given to `name` in a list of command-line arguments."""
    return arguments[arguments.index(name) + 1]


def log(message: str) -> None:
    print(f'[train_demo {time.strftime("%H:%M:%S")}] {message}', flush=True)


# The processes the recipe started and that may still run: a stop ends them (see `end_children`).
CHILDREN = set()


def start(command, **kwargs) -> subprocess.Popen:
    process = subprocess.Popen([str(c) for c in command], cwd=str(ROOT), **kwargs)
    CHILDREN.add(process)
    return process


def wait(process: subprocess.Popen) -> int:
    try:
        return process.wait()
    finally:
        CHILDREN.discard(process)


def end_children(grace_s: float = 10.0) -> None:
    """Ends the processes the recipe started (SIGTERM, then SIGKILL after `grace_s`)."""
    for process in list(CHILDREN):
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in list(CHILDREN):
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        CHILDREN.discard(process)


def run(command, **kwargs) -> None:
    """Runs one of the project's command lines; its failure ends the recipe with its exit status."""
    log(' '.join(str(c) for c in command))
    status = wait(start(command, **kwargs))
    if status != 0:
        raise SystemExit(f'train_demo: error: {command[1] if command[1] != "-m" else command[2]} ended with '
                         f'status {status}')


# --------------------------------------------------------------------------- data

def start_generators(folder: Path, count: int, size, seed: int, processes: int):
    """Starts writing `count` synthetic training samples (fgr, pha, bgr) for `folder` with several
    generator processes at once, each with its own seed; `gather_samples` waits and collects them."""
    processes = max(1, min(processes, count))
    parts = [folder / 'parts' / str(k) for k in range(processes)]
    commands = [[sys.executable, '-m', 'dataset.synthetic', '--out', part, '--count',
                 count // processes + (k < count % processes), '--size', *size, '--seed', seed * 1000 + k,
                 '--captures', '0'] for k, part in enumerate(parts)]
    log(f'{count} samples at {size[0]}x{size[1]} for {folder}, {processes} processes')
    return folder, parts, [start(command, stdout=subprocess.DEVNULL) for command in commands]


def gather_samples(folder: Path, parts, running) -> None:
    """Waits for the generators of `start_generators` and moves their files into `folder`, named
    '<part>-<index>.png'."""
    if any([wait(process) != 0 for process in running]):
        raise SystemExit(f'train_demo: error: the synthetic data generator failed for {folder}')
    for kind in KINDS:
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(parts):
        for kind in KINDS:
            for file in sorted((part / kind).iterdir()):
                os.replace(file, folder / kind / f'{k}-{file.name}')
            (part / kind).rmdir()


def prepare_evaluation(paths: dict, preset: dict, failures: list) -> None:
    """Held-out captures (seed 1), captures to tune keying on (seed 0), and the keying's alphas; run on
    a thread beside the training (each step is a process of its own)."""
    captures, (width, height) = preset['evaluation']['captures'], preset['evaluation']['size']
    try:
        for name, seed in (('heldout', 1), ('keying-tune', 0)):
            run([sys.executable, '-m', 'dataset.synthetic', '--out', paths[name], '--count', 1, '--captures', captures,
                 '--size', width, height, '--seed', seed], stdout=subprocess.DEVNULL)
        run([sys.executable, '-m', 'scripts.difference_keying', '--tune', paths['keying-tune'] / 'captures',
             '--src', paths['heldout'] / 'captures' / 'src', '--bgr', paths['heldout'] / 'captures' / 'bgr',
             '--out', paths['keying']], stdout=subprocess.DEVNULL)
    except BaseException as error:  # reported by the main thread
        failures.append(error)


# --------------------------------------------------------------------------- training

def images_per_second(log_dir: Path) -> list:
    """The images/s a training run logged to TensorBoard in `log_dir`, one per logging interval."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(log_dir), size_guidance={'scalars': 0})
    events.Reload()
    return [e.value for e in events.Scalars('train/images_per_s')] if 'train/images_per_s' in \
        events.Tags()['scalars'] else []


class Stopped(BaseException):
    """A stop signal from outside: the recipe ends where it is (BaseException, as KeyboardInterrupt, so
    that no `except Exception` on the way takes it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signal = signal.Signals(signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopSignals:
    """Notices every stop signal the process receives, and tells the recipe's own SIGTERMs apart.

    The trainers take SIGTERM and SIGUSR1 with handlers of their own while they train (they save and
    return, as if done): what reached the process is read from `signal.set_wakeup_fd`, to which every
    signal is written whoever handles it. `check()`, after each trainer and from this handler, raises
    Stopped for a signal that `send_own` did not send.
    """

    def __init__(self):
        self.own, self.read_fd, self.write_fd = 0, None, None
        self.previous_handlers, self.previous_fd = {}, -1

    def __enter__(self) -> 'StopSignals':
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)
        self.previous_fd = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self.previous_handlers = {sig: signal.signal(sig, lambda signum, frame: self.check()) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self.previous_fd)
        os.close(self.read_fd)
        os.close(self.write_fd)

    def send_own(self) -> None:
        """SIGTERM to this process, which the trainer takes as the end of its stage, and `check` ignores."""
        self.own += 1
        os.kill(os.getpid(), signal.SIGTERM)

    def check(self) -> None:
        received = b''
        while True:
            try:
                chunk = os.read(self.read_fd, 512)
            except BlockingIOError:
                break
            if not chunk:
                break
            received += chunk
        stop = None
        for signum in received:
            if signum == signal.SIGTERM and self.own > 0:
                self.own -= 1
            elif signum in STOP_SIGNALS:
                stop = stop or signum
        if stop:
            for sig in STOP_SIGNALS:  # a second signal must not cut the saving short
                signal.signal(sig, signal.SIG_IGN)
            raise Stopped(stop)


@contextlib.contextmanager
def stop_after(seconds: float, stops: StopSignals):
    """Sends this process SIGTERM after `seconds`: the trainer stops at the next step and saves its
    checkpoint, as it does when a cluster preempts it. A signal that comes before the trainer listens
    is ignored (the run then ends at its --max-steps)."""
    timer = threading.Timer(max(seconds, 0.0), stops.send_own)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def train_stage(name: str, module, arguments: list, seconds: float, preset: dict, stops: StopSignals) -> dict:
    """Trains one stage for about `seconds`: a warm-up of a few steps measures the pace, which sets
    --max-steps (and the cosine schedule's length) for the rest; the run resumes from the warm-up's
    checkpoint and is stopped at the end of the budget if it is slower than the warm-up promised.
    Returns what happened."""
    import torch
    warmup = preset['warmup_steps']
    # The cosine schedule decays over the final step count, unknown during the warm-up: its first steps
    # run at the start of a long cosine (a factor of 1 to within 1e-5), as they will in the full run.
    start = time.perf_counter()
    module.main(arguments + ['--max-steps', str(warmup), '--lr-decay-steps', '1000000'])
    stops.check()  # the trainer saved and returned early: stopped from outside
    warmup_seconds = time.perf_counter() - start
    rates = images_per_second(Path(option(arguments, '--log-dir')) / option(arguments, '--model-name'))
    steady = sorted(rates[1:]) or rates
    batch = int(option(arguments, '--batch-size'))
    steps_per_second = steady[len(steady) // 2] / batch if steady else warmup / warmup_seconds
    # What the warm-up spent beyond its steps (start-up, data workers, the first kernels) is paid again.
    overhead = max(0.0, warmup_seconds - warmup / steps_per_second)
    remaining = seconds - warmup_seconds
    steps = warmup + max(0, int(0.95 * steps_per_second * (remaining - overhead)))
    log(f'{name}: warm-up of {warmup} steps in {warmup_seconds:.1f} s, {steps_per_second:.2f} steps/s: '
        f'{steps} steps planned for a budget of {seconds:.0f} s')
    if steps > warmup:
        with stop_after(remaining, stops):
            module.main(arguments + ['--max-steps', str(steps), '--lr-decay-steps', str(steps), '--resume', 'auto'])
        stops.check()
    checkpoint = Path(option(arguments, '--checkpoint-dir')) / option(arguments, '--model-name') / 'last.pth'
    done = torch.load(checkpoint, map_location='cpu', weights_only=True)['step']
    return dict(steps=done, planned_steps=steps, seconds=round(time.perf_counter() - start, 1),
                budget_s=round(seconds, 1), warmup_steps=warmup, warmup_s=round(warmup_seconds, 1),
                steps_per_second=round(steps_per_second, 3))


# --------------------------------------------------------------------------- evaluation

COLUMNS = (('trimap', 'SAD(/1e3)', 'SAD (unknown, /1e3)'), ('trimap', 'MSE(x1e3)', 'MSE (unknown, x1e3)'),
           ('frame', 'MAD(x1e3)', 'MAD (frame, x1e3)'), ('frame', 'MSE(x1e3)', 'MSE (frame, x1e3)'))


def evaluate_alphas(pred: Path, true: Path, out: Path) -> dict:
    """The evaluation of evaluate.py in both modes; the four numbers of the README's table."""
    from evaluation.benchmark import evaluate_folders, write_results
    scores = {}
    for mode in ('trimap', 'frame'):
        write_results(evaluate_folders(str(pred), str(true), mode=mode), str(out / mode))
        metrics = json.loads((out / mode / 'summary.json').read_text())['metrics']
        scores.update({title: metrics[label] for column_mode, label, title in COLUMNS if column_mode == mode})
    return scores


def table(rows: dict) -> str:
    lines = ['| method | ' + ' | '.join(title for _, _, title in COLUMNS) + ' |',
             '|---|' + '---|' * len(COLUMNS)]
    for method, scores in rows.items():
        lines.append(f'| {method} | ' + ' | '.join(f'{scores[title]:.1f}' for _, _, title in COLUMNS) + ' |')
    return '\n'.join(lines)


# --------------------------------------------------------------------------- the recipe

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='a new or empty folder for everything the run makes')
    parser.add_argument('--minutes', type=float, default=6.0,
                        help='wall-clock minutes for the whole recipe, data and evaluation included')
    parser.add_argument('--device', default='auto', choices=['auto', 'cuda', 'cpu'])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='gpu',
                        help="'gpu': the sizes of the README's recipe; 'tiny': a smoke run in a minute on a CPU")
    parser.add_argument('--base-share', type=float, default=0.35,
                        help='the base stage\'s share of the training minutes (the refine stage gets the rest)')
    parser.add_argument('--seed', type=int, default=0)
    return parser


def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        parser.error(f'--out {out}: exists and is not an empty folder; choose a new one')
    if not 0 < args.base_share < 1:
        parser.error(f'--base-share is a fraction between 0 and 1, got {args.base_share}')
    if args.minutes <= 0:
        parser.error(f'--minutes must be positive, got {args.minutes}')
    import torch
    device = ('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device
    if device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available on this machine')
    report = dict(device=device, preset=args.preset, minutes=args.minutes, stages={},
                  phase='the making of the data')
    with StopSignals() as stops:
        try:
            return recipe(args, out, report, stops)
        except Stopped as stop:
            end_children()
            return stopped(stop, out, report)


def recipe(args: argparse.Namespace, out: Path, report: dict, stops: StopSignals) -> int:
    """The run of `main` (see the module's docstring); `report` fills up on the way."""
    preset, device = PRESETS[args.preset], report['device']
    start = time.time()
    deadline = start + args.minutes * 60
    paths = dict(base=out / 'data' / 'train', refine=out / 'data' / 'train-sq', heldout=out / 'data' / 'heldout',
                 **{'keying-tune': out / 'data' / 'keying-tune'}, keying=out / 'heldout-keying')
    out.mkdir(parents=True, exist_ok=True)

    failures = []
    evaluation = threading.Thread(target=prepare_evaluation, args=(paths, preset, failures), daemon=True)
    evaluation.start()
    generators = max(1, min(4, (os.cpu_count() or 2) // 4))  # per data set; both are written at once
    started = [start_generators(paths[stage], preset[f'{stage}_data']['count'], preset[f'{stage}_data']['size'],
                                args.seed + (0 if stage == 'base' else 20), generators) for stage in ('base', 'refine')]
    for generation in started:
        gather_samples(*generation)

    import train_base
    import train_refine
    common = ['--dataset-name', 'synthetic', '--background-dataset', 'synthetic', '--model-backbone', 'mobilenetv2',
              '--device', device, '--precision', 'auto', '--channels-last', '--own-background', '0.5',
              '--num-workers', str(preset['workers']), '--epoch-end', '100000', '--seed', str(args.seed),
              '--lr-schedule', 'cosine', '--checkpoint-dir', str(out / 'checkpoint'), '--log-dir', str(out / 'log'),
              '--log-train-loss-interval', str(preset['log_interval']), '--log-train-images-interval', '1000000',
              '--log-valid-interval', '1000000', '--checkpoint-interval', '1000000', '--valid-samples', '8']
    training_seconds = deadline - time.time() - preset['reserve_s']
    if training_seconds < 10:
        # The data is there: a model is worth more than an error, even beyond the minutes given.
        log(f'warning: the data took {time.time() - start:.0f} s of the {args.minutes:g} minutes; the stages run '
            'their warm-up steps only')
    log(f'{max(training_seconds, 0):.0f} s for training on {device}, {args.base_share:.0%} of it for the base stage')
    report['phase'] = 'the base stage'
    report['stages']['base'] = train_stage(
        'base', train_base, common + preset['base'] + ['--data-path', f"synthetic={paths['base']}",
                                                      '--model-name', 'base'],
        training_seconds * args.base_share, preset, stops)
    base_weights = out / 'checkpoint' / 'base' / 'last.pth'
    report['phase'] = 'the refine stage'
    report['stages']['refine'] = train_stage(
        'refine', train_refine, common + preset['refine'] + ['--data-path', f"synthetic={paths['refine']}",
                                                            '--model-name', 'refine',
                                                            '--model-last-checkpoint', str(base_weights)],
        deadline - time.time() - preset['reserve_s'], preset, stops)

    report['phase'] = 'the release and the evaluation'
    weights = out / WEIGHTS_NAME
    run([sys.executable, '-m', 'scripts.release_weights', out / 'checkpoint' / 'refine' / 'last.pth', weights, '--fp16'])
    evaluation.join()
    if failures:
        raise SystemExit(f'train_demo: error: preparing the held-out evaluation failed: {failures[0]}')
    captures = paths['heldout'] / 'captures'
    run([sys.executable, 'inference_images.py', '--model-checkpoint', weights, '--device', device,
         '--src', captures / 'src', '--bgr', captures / 'bgr', '--output-dir', out / 'heldout-model',
         '--output-types', 'pha', '--disable-progress'])
    rows = {'difference keying (tuned)': evaluate_alphas(paths['keying'] / 'pha', captures / 'pha',
                                                        out / 'results' / 'keying')}
    stages = report['stages']
    method = (f"this run ({stages['base']['steps']} base + {stages['refine']['steps']} refine steps, "
              f"{(time.time() - start) / 60:.1f} min on {device})")
    rows[method] = evaluate_alphas(out / 'heldout-model' / 'pha', captures / 'pha', out / 'results' / 'model')
    del report['phase']
    report.update(seconds=round(time.time() - start, 1), weights=str(weights), table=rows,
                  heldout=dict(captures=preset['evaluation']['captures'], size=preset['evaluation']['size'], seed=1))
    (out / 'results.json').write_text(json.dumps(report, indent=2) + '\n')
    width, height = preset['evaluation']['size']
    print(f"\nHeld-out captures ({preset['evaluation']['captures']} at {width}x{height}, seed 1), "
          f"{report['seconds'] / 60:.1f} minutes in all; weights in {weights}:\n{table(rows)}", flush=True)
    return 0


def stopped(stop: Stopped, out: Path, report: dict) -> int:
    """After a stop from outside: results.json with what was done, one line saying so; the exit status."""
    import torch
    saved = []
    for stage in ('base', 'refine'):
        checkpoint = out / 'checkpoint' / stage / 'last.pth'
        if checkpoint.exists():  # written by the trainer when it stopped, or at the end of its stage
            step = torch.load(checkpoint, map_location='cpu', weights_only=True)['step']
            report['stages'].setdefault(stage, {}).update(checkpoint=str(checkpoint), steps=step)
            saved.append(f'{checkpoint} (step {step})')
    if (out / WEIGHTS_NAME).exists():
        report['weights'] = str(out / WEIGHTS_NAME)
        saved.append(str(out / WEIGHTS_NAME))
    report['stopped'] = stop.signal.name
    (out / 'results.json').write_text(json.dumps(report, indent=2) + '\n')
    saved.append(str(out / 'results.json'))
    print(f"train_demo: stopped by {stop.signal.name} during {report['phase']}, before the end of the recipe; "
          f"saved {', '.join(saved)}", file=sys.stderr, flush=True)
    return 128 + stop.signal


if __name__ == '__main__':
    sys.exit(main())
