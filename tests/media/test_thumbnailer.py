"""Thumbnail sizing against the spec's rules ("Thumbnails"), one test per rule."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from myelin.config.media import DEFAULT_THUMBNAIL_SIZES, ThumbnailSize
from myelin.media.thumbnailer import (
    ImageInfo,
    choose_size,
    cropped_size,
    make_thumbnail,
    original_will_do,
    probe,
    scaled_size,
    thumbnail_type,
)

PNG = ImageInfo(1000, 800, False, "image/png")


def test_scale_keeps_the_aspect_ratio_inside_the_box() -> None:
    assert scaled_size(1000, 800, 320, 240) == (300, 240)
    assert scaled_size(800, 1000, 320, 240) == (192, 240)


def test_crop_has_the_aspect_ratio_of_the_box() -> None:
    assert cropped_size(1000, 800, 96, 96) == (96, 96)
    assert cropped_size(1000, 800, 320, 100) == (320, 100)


def test_never_upscale() -> None:
    assert scaled_size(100, 50, 800, 600) == (100, 50)
    # crop: the box shrunk as a whole to what the image can fill.
    assert cropped_size(100, 50, 200, 200) == (50, 50)


def test_the_server_returns_at_least_the_requested_size_where_possible() -> None:
    # 40x40 crop: 32x32 would be smaller than asked, 96x96 is not.
    assert choose_size(PNG, 40, 40, "crop", DEFAULT_THUMBNAIL_SIZES) == \
        ThumbnailSize(96, 96, "crop")
    # 330x250 scale of 1000x800: 320x240 gives 300x240 (too small), 640x480 gives 600x480.
    assert choose_size(PNG, 330, 250, "scale", DEFAULT_THUMBNAIL_SIZES) == \
        ThumbnailSize(640, 480, "scale")
    # The smallest that is large enough.
    assert choose_size(PNG, 30, 30, "crop", DEFAULT_THUMBNAIL_SIZES) == \
        ThumbnailSize(32, 32, "crop")


def test_when_nothing_is_large_enough_the_largest_is_used() -> None:
    assert choose_size(PNG, 5000, 5000, "scale", DEFAULT_THUMBNAIL_SIZES) == \
        ThumbnailSize(800, 600, "scale")


def test_the_requested_method_is_preferred_and_others_used_when_absent() -> None:
    only_scale = (ThumbnailSize(320, 240, "scale"),)
    assert choose_size(PNG, 96, 96, "crop", only_scale) == only_scale[0]
    assert choose_size(PNG, 96, 96, "crop", ()) is None


def test_the_original_is_returned_when_no_bigger_than_asked() -> None:
    small = ImageInfo(20, 10, False, "image/png")
    assert original_will_do(small, "image/png", 96, 96, False)
    assert not original_will_do(PNG, "image/png", 96, 96, False)
    # Not when it is animated and animation was not asked for...
    gif = ImageInfo(20, 10, True, "image/gif")
    assert not original_will_do(gif, "image/gif", 96, 96, False)
    assert original_will_do(gif, "image/gif", 96, 96, True)
    # ...nor when it is not a type a thumbnail may have, or not what it claims.
    assert not original_will_do(ImageInfo(20, 10, False, "image/bmp"), "image/bmp", 96, 96,
                                False)
    assert not original_will_do(small, "image/jpeg", 96, 96, False)


def test_thumbnail_types() -> None:
    assert thumbnail_type(ImageInfo(1, 1, False, "image/jpeg"), False) == "image/jpeg"
    assert thumbnail_type(PNG, False) == "image/png"
    assert thumbnail_type(ImageInfo(1, 1, False, "image/gif"), False) == "image/png"
    # Animated: WebP, which the spec prefers.
    assert thumbnail_type(ImageInfo(1, 1, True, "image/gif"), True) == "image/webp"


def test_exif_rotation_counts_for_the_size(tmp_path: Path) -> None:
    source = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[274] = 6  # rotate 90: displayed 300 wide, 400 high
    Image.new("RGB", (400, 300), (1, 2, 3)).save(source, "JPEG", exif=exif)
    info = probe(str(source), 10**8)
    assert (info.width, info.height) == (300, 400)
    dest = tmp_path / "thumb"
    width, height, kind, length = make_thumbnail(str(source), str(dest), info, 150, 150,
                                                 "scale", False)
    assert (width, height, kind) == (112, 150, "image/jpeg")
    with Image.open(dest) as thumb:
        assert thumb.size == (112, 150)
    assert length == dest.stat().st_size
