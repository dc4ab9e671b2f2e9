"""`python -m helpers.support {where,fetch,seed DIR}`: manage the course data cache."""
import sys

from .data import main

sys.exit(main())
