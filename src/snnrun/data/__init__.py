"""Datasets: static images (:mod:`.sets`, :mod:`.images`), event recordings (:mod:`.events`),
their augmentation (:mod:`.augment`), encoders.

Importing the package registers every dataset in :data:`snnrun.data.sets.DATASETS`: the static
ones from :mod:`.sets` and :mod:`.images`, the event ones from :mod:`.events.datasets`.
"""

from snnrun.data import images, sets  # noqa: F401  (the static datasets)
from snnrun.data.events import datasets  # noqa: F401  (nmnist, dvsgesture, cifar10dvs, shd)
