"""Datasets: static images (:mod:`.sets`), event recordings (:mod:`.events`), encoders.

Importing the package registers every dataset in :data:`snnrun.data.sets.DATASETS`: the static
ones from :mod:`.sets`, the event ones from :mod:`.events.datasets`.
"""

from snnrun.data import sets  # noqa: F401  (digits, mnist, fmnist)
from snnrun.data.events import datasets  # noqa: F401  (nmnist, dvsgesture, cifar10dvs, shd)
