"""Template-owned platform code: `copier update` keeps this package current; edit your graph instead."""
