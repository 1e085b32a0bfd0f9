"""python-soxr: the SoX resampler (offline in the simulator and tests)."""

from typing import Literal

import numpy as np
import numpy.typing as npt

Quality = Literal["VHQ", "HQ", "MQ", "LQ", "QQ"]

class ResampleStream:
    def __init__(
        self,
        in_rate: float,
        out_rate: float,
        num_channels: int,
        dtype: str = ...,
        quality: Quality | int = ...,
    ) -> None: ...
    def resample_chunk(self, x: npt.ArrayLike, last: bool = ...) -> npt.NDArray[np.generic]: ...
    def clear(self) -> None: ...

def resample(
    x: npt.ArrayLike, in_rate: float, out_rate: float, quality: Quality | int = ...
) -> npt.NDArray[np.generic]: ...
