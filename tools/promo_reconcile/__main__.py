"""`python -m promo_reconcile`: see the package's documentation."""

from promo_reconcile import main

raise SystemExit(main())
