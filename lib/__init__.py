"""IntentLab's thin library: what two or more notebooks use. Import modules explicitly,
e.g. ``from lib import data, metrics, train``; each function names the notebook that teaches it."""
from lib import safe as _safe  # noqa: F401  (pandas Styler tables escape HTML: data text is shown as text)
