"""IntentLab's thin library: what two or more notebooks use. Import modules explicitly,
e.g. ``from lib import data, metrics, train``; each function names the notebook that teaches it."""
