#!/bin/sh
# Builds the Qt6 relay into build/ beside this script:
#   benches/peers/qt6-websockets/build/qt6-relay
# Needs: apt-get install -y qt6-websockets-dev cmake g++
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$here/build" --parallel 2
echo "built $here/build/qt6-relay"
