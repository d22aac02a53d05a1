"""``python -m fastsam_geo``: the same as the ``fastsam-geo`` command."""

from fastsam_geo.cli import main

if __name__ == "__main__":
    main()
