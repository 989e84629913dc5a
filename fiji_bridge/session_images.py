"""Images of a :class:`~fiji_bridge.session.Session`: ImagePlus <-> xarray, opening, the active image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError

from .session_base import SessionBase

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr


class ImagesMixin(SessionBase):
    """Move images between ImageJ and Python (the copies are in :mod:`fiji_bridge.convert`)."""

    def to_xarray(self, imp: Any = None) -> "xr.DataArray":
        """The ImagePlus (default: the active image) as a DataArray with dims t/pln/ch/row/col."""
        from . import convert

        return convert.imageplus_to_xarray(imp if imp is not None else self.current_image(required=True))

    def to_imageplus(
        self, array: "xr.DataArray | np.ndarray", title: str | None = None, *, axes: str | None = None, show: bool = False
    ) -> Any:
        """A new ImagePlus from a DataArray (or a 2-D numpy array, or any array with ``axes`` such as "ZYX").

        Label images get their colour table from :meth:`labels_to_imageplus` instead.
        """
        from . import convert

        imp = convert.xarray_to_imageplus(array, title, axes=axes)
        if show:
            self.show(imp)
        return imp

    def show(self, imp: Any) -> None:
        """Show an image: a window with a display; headless, make it the active image (no window exists)."""
        if self.headless:
            self.jclass("ij.WindowManager").setTempCurrentImage(imp)
        else:
            imp.show()

    def labels_to_imageplus(self, labels: "xr.DataArray | np.ndarray", title: str | None = None, **kwargs: Any) -> Any:
        """A label image as 8/16-bit ImagePlus with the label LUT."""
        from . import convert

        return convert.labels_to_imageplus(labels, title, **kwargs)

    def open_image(self, path: str | Path) -> Any:
        """Open an image file with ImageJ (not shown)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image file {str(path)!r} does not exist")
        imp = self.IJ.openImage(str(path))
        if imp is None:
            raise InputError(f"ImageJ cannot open {str(path)!r}: {self.IJ.getErrorMessage() or 'unsupported format'}")
        return imp

    def current_image(self, required: bool = False) -> Any:
        """The active image (for this thread), or None."""
        imp = self.jclass("ij.WindowManager").getCurrentImage()
        if imp is None and required:
            raise InputError("there is no active image: open one first or pass an ImagePlus")
        return imp

    def image_titles(self) -> list[str]:
        return [str(t) for t in self.jclass("ij.WindowManager").getImageTitles()]
