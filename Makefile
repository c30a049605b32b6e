# liquid_control without a ROS distro: a venv with ROS 2 Jazzy from PyPI wheels.
#   make demo    train and drive the liquid demo controller
#   make test    the test suite
# Both create .venv first (python3 -m venv, then pip install -e '.[full,ros,test]').

PYTHON ?= python3
VENV = .venv
VPY = $(VENV)/bin/python
PIP_INSTALL = $(VPY) -m pip install -c requirements/constraints.txt
STAMP = $(VENV)/.installed
COLCON_VENV = .colcon-venv
COLCON_STAMP = $(COLCON_VENV)/.installed
BENCH_MINUTES ?= 60  # of collected data for bench/train_memory.py (collecting an hour: ~30 min)

# The ROS wheels re-exec every Python of the venv once to set its library path and mark it done in
# this variable; inherited from another venv's Python it would skip that (rclpy then fails to load).
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE

RUN_ENV = ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST MUJOCO_GL=egl AMENT_PREFIX_PATH=$(CURDIR)/$(VENV)

# Editable installs copy data files (package.xml, launch/, config/, models/): reinstall on change.
INSTALL_INPUTS = setup.py setup.cfg pyproject.toml package.xml requirements/constraints.txt \
	$(shell find resource launch config models -type f -not -name '.*' 2>/dev/null)

.PHONY: venv $(VENV) test test-fast docs demo bench arm64-check lint clean distclean

venv $(VENV): $(STAMP) $(COLCON_STAMP)

$(STAMP): $(INSTALL_INPUTS)
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[full,ros,test,docs]'
	touch $@

# colcon in a venv of its own, as apt's colcon is: test/project/test_colcon.py builds a workspace with it.
$(COLCON_STAMP): requirements/colcon.txt
	test -x $(COLCON_VENV)/bin/python || $(PYTHON) -m venv $(COLCON_VENV)
	$(COLCON_VENV)/bin/python -m pip install -r requirements/colcon.txt
	touch $(COLCON_VENV)/COLCON_IGNORE $@

# Two workers (pytest-xdist), a test file each at a time: most tests wait on processes, DDS or the
# simulator as much as they compute, so two share this 2-core machine's cores.
TEST_WORKERS ?= 2
test: $(STAMP) $(COLCON_STAMP)
	$(RUN_ENV) $(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 test

# What needs neither DDS nor MuJoCo and is not slow (markers in pyproject.toml): under 2 minutes here.
test-fast: $(STAMP)
	$(RUN_ENV) $(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not ros and not sim and not slow" test

# docs/ with Sphinx and myst-parser (as rosdoc2 builds them); warnings, broken links inside the
# repository included, are errors.
docs: $(STAMP)
	$(VPY) -m sphinx -W --keep-going -q -b html docs build/docs
	@echo "docs: build/docs/index.html"

# Each demo run writes its bag and trajectory plot to a new folder under demo_output/.
DEMO_DIR := demo_output/$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/liquid-control demo
	mkdir -p $(DEMO_DIR)
	$(RUN_ENV) $(VENV)/bin/liquid-control drive --seconds 60 --bag $(DEMO_DIR)/bag --plot $(DEMO_DIR)/trajectory.png

bench: $(STAMP)
	$(RUN_ENV) $(VPY) bench/step_latency.py
	$(RUN_ENV) $(VPY) bench/node_latency.py
	$(RUN_ENV) $(VPY) bench/safety_latency.py
	$(RUN_ENV) $(VPY) bench/shutdown.py
	$(RUN_ENV) $(VPY) bench/train_step.py
	$(RUN_ENV) $(VPY) bench/recorder_loss.py
	$(RUN_ENV) $(VPY) bench/camera_path.py
	$(RUN_ENV) $(VPY) bench/backends.py
	$(RUN_ENV) $(VPY) bench/energy.py
	$(RUN_ENV) $(VPY) bench/train_memory.py --minutes $(BENCH_MINUTES)

# The small-board path on arm64 under emulation (root, qemu-user-static, debootstrap; minutes):
# .[edge] from aarch64 wheels replays a bag to x86's commands. It says why when it cannot run.
arm64-check: $(STAMP)
	$(RUN_ENV) bash bench/arm64_check.sh

LINTED = liquid_control test bench launch setup.py docs/conf.py

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

clean:
	rm -rf build install log dist *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o -name __pycache__ -type d -print \
		| xargs rm -rf

distclean: clean
	rm -rf $(VENV) $(COLCON_VENV)
