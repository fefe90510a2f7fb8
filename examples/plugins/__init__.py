"""Your own code for snnrun's ``_target_`` doors, by example (README: "Your own code").

Put its parent folder on ``PYTHONPATH`` (``PYTHONPATH=examples snnrun loss=focal ...`` with
``--config-dir examples/conf``) and name its pieces by ``_target_``.
"""
