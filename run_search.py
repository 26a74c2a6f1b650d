"""python run_search.py SPACE.yaml [options]  ==  sla-nas search SPACE.yaml [options]"""

import sys

from sla_nas.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
