"""Raw values -> (id, value) entries: the `features:` spec, one encoder and fitter per kind, and the
feature map that lays them out in one id space."""
