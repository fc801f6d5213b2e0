"""`python -m scripts.gpu_check`: see the package's docstring."""
import sys

from common.memory import retain_freed_memory
from scripts.gpu_check import main

retain_freed_memory()  # as the inference commands do (the video part runs convert_video here)
sys.exit(main())
