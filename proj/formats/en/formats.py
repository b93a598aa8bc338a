"""English formats, with seconds: a run that took 8 s must not read as 0 minutes."""

DATETIME_FORMAT = "j M Y, H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
TIME_FORMAT = "H:i:s"
DATE_FORMAT = "j M Y"
