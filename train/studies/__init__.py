"""Small-scale studies of the paper's claims (ASGL.md §5) on the bundled UCI digits.

Each study is a module run as ``python -m asgl.train.studies.NAME [--quick] [--seeds N] [--out DIR]``;
it trains through :func:`asgl.train.run.main` in-process, writes ``DIR/NAME.json`` (every run: overrides,
seed, final/best test accuracy, wall time, final widths) and PNG plots, and
:mod:`asgl.train.studies.report` turns the JSON files into the tables of ``docs/REPRODUCTION.md``.

    width_robustness   SG (fixed width, p = 0) vs ASGL (learnable width, p > 0) over the width α
    noise_probability  test accuracy against the noise probability p at a large α
    dynamics           learned width and firing rate per layer over training (one ASGL run)
    temporal_task      SG vs ASGL on row-by-row digits fed to a recurrent spiking net
"""
