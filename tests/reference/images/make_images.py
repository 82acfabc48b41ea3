"""Small test inputs for the decoder: EXIF orientation, CMYK JPEG, palette, grayscale and RGBA
PNG, WebP. They are inputs only; the tests derive what they expect from the images themselves
(e.g. the EXIF-rotated file must equal the upright one rotated by hand).

Usage: python3 make_images.py  (Pillow >= 9)
"""
from PIL import Image

# A 48x32 image whose quadrants have distinct colours, so rotations are visible.
img = Image.new("RGB", (48, 32))
px = img.load()
for y in range(32):
    for x in range(48):
        px[x, y] = (255 if x < 24 else 30, 200 if y < 16 else 20, 40 + x * 4)
img.save("upright.png")
# The same pixels stored rotated, with EXIF orientation 6 ("rotate 90 CW to display"):
# a viewer that applies the tag shows upright.png.
exif = Image.Exif()
exif[0x0112] = 6
img.transpose(Image.Transpose.ROTATE_90).save("exif_rotated.jpg", exif=exif, quality=100, subsampling=0)
img.save("upright.jpg", quality=100, subsampling=0)
img.convert("CMYK").save("cmyk.jpg", quality=100)
img.convert("L").save("gray.png")
img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save("palette.png")
rgba = img.convert("RGBA")
rgba.putalpha(128)
rgba.save("rgba.png")
img.save("lossless.webp", lossless=True)
print("written")
