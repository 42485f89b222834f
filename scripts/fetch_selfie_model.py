"""Set-up step: fetch MediaPipe's selfie-segmenter model file into the lab's cache (needs pip and the index).

    python scripts/fetch_selfie_model.py [--cache-dir DIR]

Exits 0 with the file's path, or 1 with the reason it could not be fetched (the rest of the lab works without).
"""

from __future__ import annotations

import argparse
import sys

from lab.unary.mediapipe_source import SourceUnavailable, fetch_selfie_model, selfie_status


def main(argv: list[str] | None = None) -> int:
    """Fetch the model file; print where it is and whether mediapipe can run it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default=None, help="default: $LAB_CACHE_DIR or ~/.cache/crf-rnn-lab")
    args = parser.parse_args(argv)
    try:
        path = fetch_selfie_model(args.cache_dir)
    except SourceUnavailable as err:
        print(f"selfie model unavailable: {err}", file=sys.stderr)
        return 1
    print(path)
    ok, reason = selfie_status(args.cache_dir)
    if not ok:
        print(f"note: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
