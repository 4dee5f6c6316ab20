"""pipelines.movielens on both MovieLens layouts (fixtures written here), row by row."""
import json
import os
import subprocess
import sys

import pytest

from pipelines import build_dataset, movielens as M

ROOT = os.path.dirname(os.path.dirname(__file__))
GENRE_ID = {g: i + 1 for i, g in enumerate(M.GENRES)}  # the documented fixed ids

LATEST_MOVIES = [
    "movieId,title,genres",
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
    '11,"American President, The (1995)",Comedy|Drama|Romance',  # quoted comma in title
    "20,Some Film (2001),(no genres listed)",
    "30,Odd One (2003),Zombie|Horror",  # a genre outside the list: next free id
    "40,Broken,Drama,extra",  # wrong column count
    "1,Toy Story again (1995),Drama",  # repeated id: first row kept
]
LATEST_RATINGS = [
    "userId,movieId,rating,timestamp",
    "1,1,4.0,964982703",  # positive (>= 4)
    "1,11,3.5,964982224",  # negative
    "2,20,5.0,1445714994",
    "2,30,0.5,1445715207",
    "3,1,4.5,1100000000",
    "3,99,4.0,1100000001",  # unknown movie
    "3,40,4.0,1100000002",  # its movies row was malformed: unknown movie
    "abc,1,4.0,1100000003",  # non-integer user
    "3,1,x,1100000004",  # bad rating
    "3,1,6.0,1100000005",  # rating out of range
    "3,1,4.0",  # wrong column count
    "0,1,4.0,1100000006",  # non-positive id
]
# (user, movie, first genre, timestamp, label) of the valid ratings, in file order.
LATEST_EXPECTED = [(1, 1, "Adventure", 964982703, 1), (1, 11, "Comedy", 964982224, 0),
                   (2, 20, "(no genres listed)", 1445714994, 1),
                   (2, 30, "Zombie", 1445715207, 0), (3, 1, "Adventure", 1100000000, 1)]
LATEST_REJECTED = {M.REASON_UNKNOWN_MOVIE: 2, M.REASON_NON_INTEGER: 1, M.REASON_BAD_RATING: 2,
                   M.REASON_WRONG_COLUMN_COUNT: 1, M.REASON_NON_POSITIVE_ID: 1}


def _flags(*names):
  return "|".join("1" if g in names else "0" for g in M.GENRES_100K)


CHILDRENS = "Children's"  # the ml-100k name (f-strings of Python 3.11 cannot nest quotes)
ITEM_100K = [
    f"1|Toy Story (1995)|01-Jan-1995||http://x|{_flags('Animation', CHILDRENS, 'Comedy')}",
    f"2|GoldenEye (1995)|01-Jan-1995||http://x|{_flags('Action', 'Thriller')}",
    f"3|Kids (1995)|01-Jan-1995||http://x|{_flags(CHILDRENS)}",
    f"4|Nothing (1995)|01-Jan-1995||http://x|{_flags()}",  # no flag set
    f"5|Unknown (1995)|01-Jan-1995||http://x|{_flags('unknown')}",
    "6|Caf\xe9 (1995)|01-Jan-1995||http://x|" + "0|" * 18 + "2",  # bad flag; Latin-1 title
]
DATA_100K = ["196\t1\t3\t881250949", "186\t2\t4\t891717742", "22\t3\t5\t878887116",
             "244\t4\t1\t880606923", "166\t5\t2\t886397596",
             "166\t6\t4\t886397597",  # its movie row was rejected
             "1\t2\tfour\t886397598"]
DATA_100K_EXPECTED = [(196, 1, "Animation", 881250949, 0), (186, 2, "Action", 891717742, 1),
                      (22, 3, "Children", 878887116, 1),
                      (244, 4, "(no genres listed)", 880606923, 0),
                      (166, 5, "(no genres listed)", 886397596, 0)]


def _write(path, lines, encoding="utf-8"):
  path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read().splitlines()


def _check_output(out, expected, genre_ids):
  behaviors = [f"{u},{m},{genre_ids[g]},pv,{t}" for u, m, g, t, _ in expected]
  impressions = [f"{u},{m},{genre_ids[g]},{t},{label}" for u, m, g, t, label in expected]
  assert _read(out / M.BEHAVIORS_FILE) == behaviors
  assert _read(out / M.IMPRESSIONS_FILE) == impressions


def test_latest_layout_row_by_row(tmp_path):
  _write(tmp_path / "movies.csv", LATEST_MOVIES)
  _write(tmp_path / "ratings.csv", LATEST_RATINGS)
  stats = M.convert(str(tmp_path), str(tmp_path / "out"))
  genre_ids = dict(GENRE_ID, Zombie=len(M.GENRES) + 1)
  _check_output(tmp_path / "out", LATEST_EXPECTED, genre_ids)
  with open(tmp_path / "out" / M.CATEGORIES_FILE) as f:
    assert json.load(f) == {g: genre_ids[g] for g in
                            ("(no genres listed)", "Adventure", "Comedy", "Zombie")}
  r = stats["ratings"]
  assert stats["format"] == M.FORMAT_LATEST
  assert (r["input"], r["converted"], r["positives"], r["negatives"]) == (12, 5, 3, 2)
  assert r["rejected_by_reason"] == LATEST_REJECTED and r["balanced"]
  assert stats["movies"]["rejected_by_reason"] == {M.REASON_WRONG_COLUMN_COUNT: 1,
                                                   M.REASON_DUPLICATE_MOVIE: 1}
  dead = _read(tmp_path / "out" / M.DEAD_LETTER_FILE)
  assert len(dead) == 7 + 2 and all(len(line.split("\t")) == 4 for line in dead)
  assert "ratings\tbad_rating\trating='x'\t3,1,x,1100000004" in dead
  assert "ratings\tnon_integer_field\tuserId='abc'\tabc,1,4.0,1100000003" in dead
  assert "ratings\tunknown_movie\tmovieId=99\t3,99,4.0,1100000001" in dead
  assert "movies\tduplicate_movie\tmovieId=1\t1,Toy Story again (1995),Drama" in dead


def test_100k_layout_row_by_row(tmp_path):
  _write(tmp_path / "u.item", ITEM_100K, encoding="latin-1")
  _write(tmp_path / "u.data", DATA_100K)
  stats = M.convert(str(tmp_path), str(tmp_path / "out"), fmt="auto")
  assert stats["format"] == M.FORMAT_100K
  _check_output(tmp_path / "out", DATA_100K_EXPECTED, GENRE_ID)
  assert stats["ratings"]["rejected_by_reason"] == {M.REASON_UNKNOWN_MOVIE: 1,
                                                    M.REASON_BAD_RATING: 1}
  assert stats["movies"]["rejected_by_reason"] == {M.REASON_BAD_GENRE_FLAGS: 1}
  dead = _read(tmp_path / "out" / M.DEAD_LETTER_FILE)
  assert any(line.startswith("movies\tbad_genre_flags\t") and "Caf\xe9" in line
             for line in dead)
  assert "ratings\tbad_rating\trating='four'\t1\\t2\\tfour\\t886397598" in dead


def test_converted_log_builds_a_dataset_with_real_labels(tmp_path):
  _write(tmp_path / "movies.csv", LATEST_MOVIES)
  _write(tmp_path / "ratings.csv", LATEST_RATINGS)
  M.convert(str(tmp_path), str(tmp_path / "out"))
  out = tmp_path / "out"
  stats = build_dataset.run([f"--input={out / M.BEHAVIORS_FILE}",
                             f"--impressions={out / M.IMPRESSIONS_FILE}",
                             f"--output_dir={tmp_path / 'data'}", "--min_history=0",
                             "--split=user_last"])
  assert stats["rows"]["impressions"]["accepted"] == 5
  assert sum(stats["splits"][s]["positives"] for s in ("train", "eval")) == 3
  assert stats["splits"]["eval"]["targets"] == 3  # each of the 3 users' last rating


def test_cli_help_and_usage_errors(tmp_path):
  def cli(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.movielens", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)

  out = cli("--help")
  assert out.returncode == 0 and "--positive_rating" in out.stdout and "u.data" in out.stdout
  out = cli(f"--input_dir={tmp_path}", f"--output_dir={tmp_path / 'o'}")
  assert out.returncode == 2
  assert out.stderr.strip() == (
      f"movielens: error: --input_dir={tmp_path} holds no MovieLens ratings.csv + "
      "movies.csv or u.data + u.item (--format=auto); ml-1m's '::' .dat files are not "
      "supported")
  _write(tmp_path / "movies.csv", ["id,name,genre"])
  _write(tmp_path / "ratings.csv", LATEST_RATINGS[:2])
  out = cli(f"--input_dir={tmp_path}", f"--output_dir={tmp_path / 'o'}")
  assert out.returncode == 2 and "header 'id,name,genre'" in out.stderr
  with pytest.raises(M.ConversionError, match="u.data"):
    M.detect_format(str(tmp_path), M.FORMAT_100K)
