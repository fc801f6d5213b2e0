"""What a part found (`PartResult`, saved after every change), the machine, and the packages it lacks."""
import importlib
import json
import os
import platform
import time
from typing import Dict, Iterable


class PartResult:
    """What one part found: rows and notes, rewritten to `path` after every change, so that a part
    stopped at its time limit (or a check cut off) leaves what it measured."""

    def __init__(self, path: str):
        self.path, self.data = path, {'rows': [], 'notes': []}

    def row(self, **row) -> None:
        self.data['rows'].append(row)
        self.save()

    def note(self, text: str) -> None:
        print(f'note: {text}', flush=True)
        self.data['notes'].append(text)
        self.save()

    def set(self, **values) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        write_json(self.data, self.path)


def write_json(data, path: str) -> None:
    from common.files import atomic_write

    def write(temporary: str) -> None:
        with open(temporary, 'w') as f:
            json.dump(data, f, indent=2, default=str)
    atomic_write(path, write)


def time_left(deadline: float) -> float:
    return deadline - time.time()


def missing_packages(names: Iterable[str]) -> Dict[str, str]:
    """name -> why it cannot be imported, for the packages among `names` that cannot be."""
    missing = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # missing, or broken: either way the part cannot use it
            missing[name] = f'{type(error).__name__}: {error}'
    return missing


def machine_info(device_type: str) -> Dict:
    """Versions and the device, for the record."""
    import torch
    import torchvision
    info = dict(python=platform.python_version(), platform=platform.platform(), cpu_count=os.cpu_count(),
                torch=torch.__version__, torchvision=torchvision.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    for name in ('onnxruntime', 'onnx', 'av', 'kornia', 'tensorboard', 'numpy'):
        try:
            info[name] = importlib.import_module(name).__version__
        except Exception as error:  # missing, or broken: either way worth recording
            info[name] = f'unavailable ({type(error).__name__})'
    if device_type == 'cuda' and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                    gpu_count=torch.cuda.device_count())
    return info
