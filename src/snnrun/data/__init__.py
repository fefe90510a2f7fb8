"""Datasets: static images (:mod:`.dataset`, :mod:`.images`), event recordings (:mod:`.events`),
their augmentation (:mod:`.augment`), encoders.

Importing the package registers every dataset in :data:`snnrun.data.dataset.DATASETS`: the static
ones from :mod:`.dataset` and :mod:`.images`, the event ones from :mod:`.events.datasets`.
"""

from snnrun.data import dataset, images  # noqa: F401  (the static datasets)
from snnrun.data.events import datasets  # noqa: F401  (nmnist, dvsgesture, cifar10dvs, shd)
