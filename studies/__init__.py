"""Study definitions: each module maps a few dials (presets) to a plan of runs; run one with
`python studies/<name>.py --help`."""
