r"""MovieLens ratings -> our two inputs: a behavior log and a labelled impression log.

  python -m pipelines.movielens --input_dir=ml-latest-small --output_dir=ml_logs
  python -m pipelines.build_dataset --input=ml_logs/behaviors.csv \
      --impressions=ml_logs/impressions.csv --output_dir=ml_data --split=user_last

Reads either MovieLens layout (--format=auto picks by the files present):
  latest  ratings.csv (userId,movieId,rating,timestamp; header) + movies.csv
          (movieId,title,genres; header; genres '|'-separated) -- ml-latest(-small),
          ml-20m, ml-25m, ml-32m;
  100k    u.data (user<TAB>item<TAB>rating<TAB>timestamp) + u.item ('|'-separated, Latin-1,
          19 genre flags in the order of u.genre) -- ml-100k.
Download from https://grouplens.org/datasets/movielens/ (read its README: research use,
no endorsement, cite the paper, redistribution under the same licence, no commercial use).

Writes in --output_dir:
  behaviors.csv    user_id,item_id,category_id,pv,timestamp  (every rating is a behavior)
  impressions.csv  user_id,item_id,category_id,timestamp,label (label 1 iff rating >=
                   --positive_rating, default 4, as in the DIN paper's MovieLens setup)
  categories.json  {genre: category id}: category = the movie's first listed genre
  dead_letter.txt  every rejected row: source<TAB>reason<TAB>field=value<TAB>raw line
  convert_stats.json  rows read / converted / rejected by reason per file
Rejected rows (counted, never silently dropped): wrong column count, non-integer ids or
timestamp, a rating that is not a number in [0.5, 5], a rating of a movie the movies file
does not list (or lists malformed); in the movies file: wrong column count, a bad id, bad
ml-100k genre flags, a repeated movie id (its first row is kept).
"""
import argparse
import collections
import csv
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from eta_tf import config_flags
from eta_tf import io_utils
from pipelines import parsing

_LOG = logging.getLogger("pipelines.movielens")

FORMAT_LATEST = "latest"
FORMAT_100K = "100k"
FORMATS = {FORMAT_LATEST: ("ratings.csv", "movies.csv"), FORMAT_100K: ("u.data", "u.item")}

# Category ids of the genres of both layouts (ml-latest's list; ml-100k's "Children's" and
# "unknown" are the same genres under other names). A genre outside this list gets the
# next free id, in sorted order of the unknown names.
GENRES = ("(no genres listed)", "Action", "Adventure", "Animation", "Children", "Comedy",
          "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX",
          "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
GENRE_ALIASES = {"Children's": "Children", "unknown": "(no genres listed)"}
# ml-100k's u.item genre flags, in file order (ml-100k/u.genre).
GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
               "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
               "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
NO_GENRE = GENRES[0]

BEHAVIORS_FILE = "behaviors.csv"
IMPRESSIONS_FILE = "impressions.csv"
CATEGORIES_FILE = "categories.json"
DEAD_LETTER_FILE = "dead_letter.txt"
STATS_FILE = "convert_stats.json"

REASON_WRONG_COLUMN_COUNT = "wrong_column_count"
REASON_NON_INTEGER = "non_integer_field"
REASON_NON_POSITIVE_ID = "non_positive_id"
REASON_BAD_RATING = "bad_rating"
REASON_BAD_GENRE_FLAGS = "bad_genre_flags"
REASON_DUPLICATE_MOVIE = "duplicate_movie"
REASON_UNKNOWN_MOVIE = "unknown_movie"


class ConversionError(Exception):
  """The input as a whole is unusable (missing file, wrong header): exit code 2."""


class RowError(Exception):
  """One row is unusable: reason (a REASON_* code) and the offending field=value."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason, self.detail = reason, detail


def detect_format(input_dir: str, fmt: str = "auto") -> str:
  """The layout of `input_dir`: `fmt` checked, or the first layout whose files exist."""
  candidates = list(FORMATS) if fmt == "auto" else [fmt]
  for name in candidates:
    if all(os.path.isfile(os.path.join(input_dir, f)) for f in FORMATS[name]):
      return name
  wanted = " or ".join(" + ".join(files) for name, files in FORMATS.items()
                       if name in candidates)
  raise ConversionError(f"--input_dir={input_dir} holds no MovieLens {wanted} "
                        f"(--format={fmt}); ml-1m's '::' .dat files are not supported")


def _int_field(name: str, value: str) -> int:
  value = value.strip()
  if not (value.isdigit() and value.isascii()) or len(value) > 19:
    raise RowError(REASON_NON_INTEGER, f"{name}={value!r}")
  number = int(value)
  if number <= 0 and name != "timestamp":
    raise RowError(REASON_NON_POSITIVE_ID, f"{name}={value!r}")
  return number


def _rating_field(value: str) -> float:
  try:
    rating = float(value)
  except ValueError:
    rating = float("nan")
  if not 0.5 <= rating <= 5.0:  # NaN fails too
    raise RowError(REASON_BAD_RATING, f"rating={value.strip()!r}")
  return rating


def _columns(fields: List[str], expected: int) -> List[str]:
  if len(fields) != expected:
    raise RowError(REASON_WRONG_COLUMN_COUNT,
                   f"columns={len(fields)} (expected {expected})")
  return fields


class GenreIds:
  """Genre name -> category id (GENRES order from 1; unseen names after, in sorted order)."""

  def __init__(self, genres_seen: Sequence[str]):
    known = {genre: i + 1 for i, genre in enumerate(GENRES)}
    extra = sorted({g for g in genres_seen if g not in known})
    self.ids = dict(known, **{g: len(GENRES) + 1 + i for i, g in enumerate(extra)})

  def __getitem__(self, genre: str) -> int:
    return self.ids[genre]


def _first_genre_latest(genres: str) -> str:
  first = genres.split("|")[0].strip()
  return GENRE_ALIASES.get(first, first) or NO_GENRE


def _first_genre_100k(flags: List[str]) -> str:
  if len(flags) != len(GENRES_100K) or any(f.strip() not in ("0", "1") for f in flags):
    raise RowError(REASON_BAD_GENRE_FLAGS, f"genres={'|'.join(flags)!r}")
  for name, flag in zip(GENRES_100K, flags):
    if flag.strip() == "1":
      return GENRE_ALIASES.get(name, name)
  return NO_GENRE


def _data_lines(path: str, fmt: str, header: Optional[List[str]], separator: str):
  """The data lines of a file (str, terminators kept), after checking its header.

  ml-latest files are UTF-8, ml-100k files Latin-1; undecodable bytes are kept as
  surrogate escapes so the dead letter shows them as \\xNN.
  """
  encoding = "utf-8" if fmt == FORMAT_LATEST else "latin-1"
  with open(path, encoding=encoding, errors="surrogateescape", newline="") as f:
    if header is not None:
      first = f.readline()
      if [h.strip() for h in first.split(separator)] != header:
        raise ConversionError(f"{path}: header {first.strip()!r}, expected "
                              f"{separator.join(header)!r}")
    yield from f


def _movie_lines(path: str, fmt: str):
  if fmt == FORMAT_LATEST:
    return _data_lines(path, fmt, ["movieId", "title", "genres"], ",")
  return _data_lines(path, fmt, None, "|")


def _parse_movie_latest(raw: str) -> Tuple[int, str]:
  fields = _columns(next(csv.reader([raw])), 3)  # titles may hold quoted commas
  return _int_field("movieId", fields[0]), _first_genre_latest(fields[2])


def _parse_movie_100k(raw: str) -> Tuple[int, str]:
  fields = _columns(raw.rstrip("\r\n").split("|"), 5 + len(GENRES_100K))
  return _int_field("movie id", fields[0]), _first_genre_100k(fields[5:])


# Column names (as the layout's README calls them, used in error details) and separator.
_RATING_COLUMNS = {FORMAT_LATEST: (["userId", "movieId", "rating", "timestamp"], ","),
                   FORMAT_100K: (["user id", "item id", "rating", "timestamp"], "\t")}


def _parse_rating(raw: str, separator: str, names: List[str]):
  """(user, movie, rating, timestamp) of one ratings line; RowError naming the field."""
  fields = _columns(raw.rstrip("\r\n").split(separator), 4)
  user, movie = _int_field(names[0], fields[0]), _int_field(names[1], fields[1])
  rating = _rating_field(fields[2])
  timestamp = _int_field(names[3], fields[3])
  return user, movie, rating, timestamp


class _DeadLetter:
  """Counts rejected rows by (source, reason) and writes them, one escaped line each."""

  def __init__(self, path: str):
    self._file = open(path, "w", encoding="utf-8")
    self.counts = collections.defaultdict(collections.Counter)

  def reject(self, source: str, error: RowError, raw: str):
    self.counts[source][error.reason] += 1
    self._file.write(f"{source}\t{error.reason}\t{parsing.escape_raw(error.detail)}\t"
                     f"{parsing.escape_raw(raw.rstrip(chr(13) + chr(10)))}\n")

  def close(self):
    self._file.close()


def _read_movies(path: str, fmt: str, dead: _DeadLetter) -> Tuple[Dict[int, str], dict]:
  """{movie id: first genre} and the movies file's row counts."""
  genres, rows = {}, 0
  parse = _parse_movie_latest if fmt == FORMAT_LATEST else _parse_movie_100k
  for raw in _movie_lines(path, fmt):
    rows += 1
    try:
      movie, genre = parse(raw)
      if movie in genres:  # the first row of a movie id is kept
        raise RowError(REASON_DUPLICATE_MOVIE, f"movieId={movie}")
      genres[movie] = genre
    except RowError as error:
      dead.reject("movies", error, raw)
  return genres, {"input": rows, "accepted": len(genres)}


def convert(input_dir: str, output_dir: str, fmt: str = "auto", positive_rating: float = 4.0,
            progress_every: int = 1_000_000) -> dict:
  """Converts one MovieLens directory; returns the stats (also in convert_stats.json)."""
  fmt = detect_format(input_dir, fmt)
  ratings_name, movies_name = FORMATS[fmt]
  os.makedirs(output_dir, exist_ok=True)
  started = time.time()
  dead = _DeadLetter(os.path.join(output_dir, DEAD_LETTER_FILE))
  try:
    movie_genre, movie_rows = _read_movies(os.path.join(input_dir, movies_name), fmt, dead)
    ids = GenreIds(movie_genre.values())
    category_of = {movie: ids[genre] for movie, genre in movie_genre.items()}
    rows = converted = positives = 0
    with open(os.path.join(output_dir, BEHAVIORS_FILE), "w") as behaviors, \
        open(os.path.join(output_dir, IMPRESSIONS_FILE), "w") as impressions:
      names, separator = _RATING_COLUMNS[fmt]
      header = names if fmt == FORMAT_LATEST else None
      for raw in _data_lines(os.path.join(input_dir, ratings_name), fmt, header, separator):
        rows += 1
        if progress_every and rows % progress_every == 0:
          _LOG.info("%s: %d rows (%.0f rows/s)", ratings_name, rows,
                    rows / (time.time() - started))
        try:
          user, movie, rating, timestamp = _parse_rating(raw, separator, names)
          if movie not in category_of:
            raise RowError(REASON_UNKNOWN_MOVIE, f"movieId={movie}")
        except RowError as error:
          dead.reject("ratings", error, raw)
          continue
        category = category_of[movie]
        label = int(rating >= positive_rating)
        behaviors.write(f"{user},{movie},{category},pv,{timestamp}\n")
        impressions.write(f"{user},{movie},{category},{timestamp},{label}\n")
        converted += 1
        positives += label
  finally:
    dead.close()
  used = sorted({g for g in movie_genre.values()}, key=ids.__getitem__)
  # Atomic (temp + fsync + rename): a killed run never leaves half a JSON file.
  io_utils.atomic_write_json(os.path.join(output_dir, CATEGORIES_FILE),
                             {g: ids[g] for g in used}, sort_keys=False)
  ratings_rejected = dict(sorted(dead.counts["ratings"].items()))
  stats = {
      "format": fmt,
      "input_dir": input_dir,
      "positive_rating": positive_rating,
      "movies": dict(movie_rows, rejected_by_reason=dict(sorted(
          dead.counts["movies"].items()))),
      "ratings": {"input": rows, "converted": converted, "positives": positives,
                  "negatives": converted - positives,
                  "rejected": sum(ratings_rejected.values()),
                  "rejected_by_reason": ratings_rejected,
                  "balanced": rows == converted + sum(ratings_rejected.values())},
      "categories": len(used),
      "seconds": round(time.time() - started, 2),
  }
  io_utils.atomic_write_json(os.path.join(output_dir, STATS_FILE), stats, sort_keys=False)
  return stats


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m pipelines.movielens", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input_dir", required=True,
                      help="an unpacked MovieLens directory (ratings.csv + movies.csv, or "
                           "u.data + u.item)")
  parser.add_argument("--output_dir", required=True, help="directory for the two logs")
  parser.add_argument("--format", choices=["auto", *FORMATS], default="auto",
                      help="layout of --input_dir (default auto: by the files present)")
  parser.add_argument("--positive_rating", type=float, default=4.0,
                      help="ratings >= this are positive impressions (default 4, as DIN)")
  parser.add_argument("--progress_every", type=int, default=1_000_000,
                      help="log progress every this many rating rows (0: never)")
  return config_flags.add_flag_suggestions(parser)


def main(argv: Optional[Sequence[str]] = None) -> dict:
  logging.basicConfig(level=logging.INFO, force=True,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  args = make_parser().parse_args(argv)
  try:
    stats = convert(args.input_dir, args.output_dir, args.format, args.positive_rating,
                    args.progress_every)
  except (ConversionError, OSError) as error:
    print(f"movielens: error: {error}", file=sys.stderr)
    raise SystemExit(2)
  r = stats["ratings"]
  _LOG.info("%s layout: %d rating rows, %d converted (%d positive, %d negative), %d "
            "rejected %s; %d movies, %d categories; %.1f s -> %s", stats["format"],
            r["input"], r["converted"], r["positives"], r["negatives"], r["rejected"],
            r["rejected_by_reason"], stats["movies"]["accepted"], stats["categories"],
            stats["seconds"], args.output_dir)
  return stats


if __name__ == "__main__":
  main()
