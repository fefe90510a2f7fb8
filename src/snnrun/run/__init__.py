"""One run and its dir: building (:mod:`.build`), training in a claimed dir (:mod:`.session`),
resume, checkpoints, the run dir, loggers, sweeps."""
