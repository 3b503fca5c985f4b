// usage: qt6-relay [PORT]   (PORT 0, the default, picks a free one; or $PORT)
// prints: listening on ws://127.0.0.1:PORT
#include <QtCore/QCoreApplication>

#include <cstdio>
#include <cstdlib>

#include "relay.h"

int main(int argc, char *argv[])
{
    QCoreApplication app(argc, argv);

    const char *portArg = argc > 1 ? argv[1] : std::getenv("PORT");
    bool ok = true;
    const quint16 port = portArg ? QByteArray(portArg).toUShort(&ok) : 0;
    if (!ok) {
        std::fprintf(stderr, "qt6-relay: error: bad port %s\n", portArg);
        return 2;
    }

    Relay relay;
    if (!relay.listen(port)) {
        std::fprintf(stderr, "qt6-relay: error: cannot listen on port %u: %s\n", port,
                     qPrintable(relay.errorString()));
        return 1;
    }
    std::printf("listening on ws://127.0.0.1:%u\n", relay.port());
    std::fflush(stdout);

    return app.exec();
}
