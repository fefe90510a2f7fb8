"""Figures of a run: drawing (:mod:`.figures`), probing a network on a sample (:mod:`.probe`),
rendering the figure sets (:mod:`.render`)."""
