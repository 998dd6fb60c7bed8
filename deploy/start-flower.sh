#!/bin/sh
# Start Flower only behind basic auth: FLOWER_BASIC_AUTH must be user:password (several
# separated by commas), and not the template's CHANGE-ME placeholder. Arguments go to
# `celery -A workers flower`.
case "$FLOWER_BASIC_AUTH" in
  "" | *CHANGE-ME*)
    echo "flower: FLOWER_BASIC_AUTH is not set (user:password): refusing to serve Flower without authentication" >&2
    exit 64 ;;
  *:*) ;;
  *)
    echo "flower: FLOWER_BASIC_AUTH must be user:password" >&2
    exit 64 ;;
esac
exec celery -A workers flower "$@"
