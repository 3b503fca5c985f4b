// A relay on Qt6's QWebSocketServer with wshub's routing, for side-by-side
// load runs.
//
// ws://127.0.0.1:PORT/ROOM/NAME joins ROOM as NAME (one segment: the
// default room; a last segment key=value names the client value). A plain
// message goes to every other client in the sender's room, text as text
// and binary as binary; a text message that is a JSON object with a string
// "receiver" goes to the clients with that name. No offline queue, no
// limits beyond Qt's own.
#include "relay.h"

#include <QtCore/QJsonDocument>
#include <QtCore/QJsonObject>
#include <QtCore/QStringList>
#include <QtCore/QUrl>
#include <QtNetwork/QHostAddress>
#include <QtWebSockets/QWebSocket>
#include <QtWebSockets/QWebSocketServer>

Relay::Relay(QObject *parent)
    : QObject(parent),
      m_pWebSocketServer(new QWebSocketServer(QStringLiteral("wshub peer relay"),
                                              QWebSocketServer::NonSecureMode, this))
{
    connect(m_pWebSocketServer, &QWebSocketServer::newConnection,
            this, &Relay::onNewConnection);
}

Relay::~Relay()
{
    m_pWebSocketServer->close();
    qDeleteAll(m_clients.keyBegin(), m_clients.keyEnd());
}

bool Relay::listen(quint16 port)
{
    return m_pWebSocketServer->listen(QHostAddress::LocalHost, port);
}

quint16 Relay::port() const
{
    return m_pWebSocketServer->serverPort();
}

QString Relay::errorString() const
{
    return m_pWebSocketServer->errorString();
}

void Relay::onNewConnection()
{
    while (m_pWebSocketServer->hasPendingConnections()) {
        QWebSocket *pSocket = m_pWebSocketServer->nextPendingConnection();

        QStringList segments = pSocket->requestUrl().path(QUrl::FullyEncoded)
                                   .split(QLatin1Char('/'), Qt::SkipEmptyParts);
        for (QString &segment : segments)
            segment = QUrl::fromPercentEncoding(segment.toUtf8());
        Client client;
        if (segments.isEmpty()) {
            client.name = QStringLiteral("anon-%1").arg(++m_anon);
        } else {
            client.name = segments.takeLast();
            const qsizetype eq = client.name.indexOf(QLatin1Char('='));
            if (eq >= 0 && eq + 1 < client.name.size())
                client.name = client.name.mid(eq + 1);
        }
        client.room = segments.join(QLatin1Char('/'));

        connect(pSocket, &QWebSocket::textMessageReceived, this, &Relay::processTextMessage);
        connect(pSocket, &QWebSocket::binaryMessageReceived, this, &Relay::processBinaryMessage);
        connect(pSocket, &QWebSocket::disconnected, this, &Relay::socketDisconnected);

        m_rooms[client.room].append(pSocket);
        m_names[client.name].append(pSocket);
        m_clients.insert(pSocket, client);
    }
}

const QList<QWebSocket *> *Relay::targetsFor(QWebSocket *from, const QString *text) const
{
    if (text && text->startsWith(QLatin1Char('{'))) {
        const QJsonDocument doc = QJsonDocument::fromJson(text->toUtf8());
        const QJsonValue receiver = doc.isObject() ? doc.object().value(QLatin1String("receiver"))
                                                   : QJsonValue();
        if (receiver.isString()) {
            auto it = m_names.constFind(receiver.toString());
            return it == m_names.constEnd() ? nullptr : &it.value();
        }
    }
    auto client = m_clients.constFind(from);
    if (client == m_clients.constEnd())
        return nullptr;
    auto room = m_rooms.constFind(client->room);
    return room == m_rooms.constEnd() ? nullptr : &room.value();
}

void Relay::processTextMessage(const QString &message)
{
    QWebSocket *pSender = qobject_cast<QWebSocket *>(sender());
    const QList<QWebSocket *> *targets = targetsFor(pSender, &message);
    if (!targets)
        return;
    for (QWebSocket *pClient : *targets) {
        if (pClient != pSender && pClient->state() == QAbstractSocket::ConnectedState)
            pClient->sendTextMessage(message);
    }
}

void Relay::processBinaryMessage(const QByteArray &message)
{
    QWebSocket *pSender = qobject_cast<QWebSocket *>(sender());
    const QList<QWebSocket *> *targets = targetsFor(pSender, nullptr);
    if (!targets)
        return;
    for (QWebSocket *pClient : *targets) {
        if (pClient != pSender && pClient->state() == QAbstractSocket::ConnectedState)
            pClient->sendBinaryMessage(message);
    }
}

void Relay::socketDisconnected()
{
    QWebSocket *pClient = qobject_cast<QWebSocket *>(sender());
    auto it = m_clients.find(pClient);
    if (it == m_clients.end())
        return;
    for (auto [index, key] : { std::pair{ &m_rooms, it->room }, std::pair{ &m_names, it->name } }) {
        auto set = index->find(key);
        if (set != index->end()) {
            set->removeOne(pClient);
            if (set->isEmpty())
                index->erase(set);
        }
    }
    m_clients.erase(it);
    pClient->deleteLater();
}
