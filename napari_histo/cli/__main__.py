"""``python -m napari_histo.cli`` runs the CLI (same as the ``napari-histo`` script)."""

import sys

from napari_histo.cli import main

sys.exit(main())
