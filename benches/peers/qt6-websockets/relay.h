// A relay on Qt6's QWebSocketServer with wshub's routing, for side-by-side
// load runs: the classic Qt chat-server demo (one event loop, signals and
// slots, one QWebSocket per client) with rooms and directed messages.
#ifndef RELAY_H
#define RELAY_H

#include <QtCore/QHash>
#include <QtCore/QList>
#include <QtCore/QObject>
#include <QtCore/QString>

QT_FORWARD_DECLARE_CLASS(QWebSocketServer)
QT_FORWARD_DECLARE_CLASS(QWebSocket)

class Relay : public QObject
{
    Q_OBJECT
public:
    explicit Relay(QObject *parent = nullptr);
    ~Relay() override;

    bool listen(quint16 port);
    quint16 port() const;
    QString errorString() const;

private Q_SLOTS:
    void onNewConnection();
    void processTextMessage(const QString &message);
    void processBinaryMessage(const QByteArray &message);
    void socketDisconnected();

private:
    struct Client {
        QString room;
        QString name;
    };

    // Where a message from `from` goes: the clients named by a directed
    // JSON text message's "receiver", else everyone in the sender's room.
    const QList<QWebSocket *> *targetsFor(QWebSocket *from, const QString *text) const;

    QWebSocketServer *m_pWebSocketServer;
    QHash<QWebSocket *, Client> m_clients;
    QHash<QString, QList<QWebSocket *>> m_rooms; // room -> clients
    QHash<QString, QList<QWebSocket *>> m_names; // name -> clients
    quint64 m_anon = 0;
};

#endif // RELAY_H
