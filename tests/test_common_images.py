"""common.images: one pixel limit (BGM_MAX_IMAGE_PIXELS) for every script and data set, parsed once."""
import numpy as np
import pytest
from PIL import Image

import inference_images
from common.errors import UserError
from common.images import DEFAULT_MAX_PIXELS, ImageError, max_image_pixels, open_image


def test_the_pixel_limit_is_a_whole_number_or_a_clear_error(monkeypatch):
    monkeypatch.delenv('BGM_MAX_IMAGE_PIXELS', raising=False)
    assert max_image_pixels() == DEFAULT_MAX_PIXELS
    for text, value in (('', DEFAULT_MAX_PIXELS), ('0', 0), ('400_000_000', 400_000_000), (' 1,000 ', 1000)):
        monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', text)
        assert max_image_pixels() == value, text
    # -5 was taken as "no limit"; any value but a whole number >= 0 is refused, naming the variable.
    for text in ('-5', '-1', 'abc', '2.5', '1e9'):
        monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', text)
        with pytest.raises(UserError, match=f"^BGM_MAX_IMAGE_PIXELS='{text.strip()}': expected a whole number of "
                                            "pixels .*, or 0 for no limit$"):
            max_image_pixels()


@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')
def test_the_limit_is_exact_and_names_the_variable(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((7, 43), np.uint8)).save(tmp_path / 'a.png')   # 301 pixels
    monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', '301')                        # an odd limit was 1 pixel lower
    open_image(str(tmp_path / 'a.png')).close()
    monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', '300')
    with pytest.raises(ImageError, match='43x7 .301 pixels. is above the limit of 300 pixels.*BGM_MAX_IMAGE_PIXELS'):
        open_image(str(tmp_path / 'a.png'))


def test_inference_refuses_a_malformed_limit_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('BGM_MAX_IMAGE_PIXELS', '-5')
    try:
        inference_images.main(['--output-dir', str(tmp_path / 'out'), '--disable-progress'])
    except SystemExit as exit:
        assert exit.code == 1
    else:
        pytest.fail('ran with BGM_MAX_IMAGE_PIXELS=-5')
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith('warning:')]
    assert err == ["inference_images.py: error: BGM_MAX_IMAGE_PIXELS='-5': expected a whole number of pixels "
                   "(e.g. 400000000), or 0 for no limit"], err
    assert not (tmp_path / 'out').exists()
