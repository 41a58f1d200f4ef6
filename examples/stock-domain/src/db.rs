//! The SQLite database: schema, demo data, queries.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{Duration, NaiveDate, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::money::Money;

/// A database error (SQLite, or a blocking task that did not finish).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite reported an error.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task running the query failed.
    #[error("database task: {0}")]
    Task(String),
    /// The password hash could not be made.
    #[error("password hashing: {0}")]
    Hash(String),
}

/// The embedded database. One connection behind a mutex, used from blocking tasks:
/// enough for the example's load; a real app would use a pool.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// A product.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Product {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Category id.
    pub category_id: i64,
    /// Unit of measure id.
    pub uom_id: i64,
    /// Price per unit.
    pub price: Money,
}

/// What a client sends to create or update a product.
#[derive(Debug, Clone, Deserialize)]
pub struct ProductInput {
    /// Name.
    pub name: String,
    /// Category id.
    pub category_id: i64,
    /// Unit of measure id.
    pub uom_id: i64,
    /// Price per unit.
    pub price: Money,
}

/// A named row of a tenant (category, unit of measure).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Named {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// One point of a balance series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BalancePoint {
    /// The period (`2026-11-22`, `2026-W47`, `2026-11`).
    pub period: String,
    /// Sales in the period.
    pub sales: Money,
    /// Payments in the period.
    pub payments: Money,
    /// Running balance since the start of the range: sales minus payments.
    pub balance: Money,
}

/// Balance granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Per day.
    Daily,
    /// Per ISO week.
    Weekly,
    /// Per month.
    Monthly,
}

impl Granularity {
    /// Parses `daily`, `weekly` or `monthly`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(Self::Daily),
            "weekly" => Some(Self::Weekly),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }

    fn format(self) -> &'static str {
        match self {
            Self::Daily => "%Y-%m-%d",
            Self::Weekly => "%Y-W%W",
            Self::Monthly => "%Y-%m",
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS categories (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uom (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL,
  category_id INTEGER NOT NULL, uom_id INTEGER NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, product_id INTEGER NOT NULL,
  quantity INTEGER NOT NULL, unit_price_cents INTEGER NOT NULL, sold_on TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payments (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, amount_cents INTEGER NOT NULL,
  method TEXT NOT NULL, paid_on TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, username TEXT NOT NULL UNIQUE,
  password_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, created_at TEXT NOT NULL,
  path TEXT NOT NULL, totals TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sales_by_tenant_day ON sales (tenant_id, sold_on);
CREATE INDEX IF NOT EXISTS payments_by_tenant_day ON payments (tenant_id, paid_on);
";

impl Db {
    /// Opens `url` (`sqlite://path`, `sqlite::memory:`, or a plain path), creating
    /// the schema and, on an empty database, the demo data.
    ///
    /// # Errors
    /// SQLite's error.
    pub fn open(url: &str) -> Result<Self, DbError> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let conn = if path == "sqlite::memory:" || path == ":memory:" {
            Connection::open_in_memory()?
        } else {
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| DbError::Task(e.to_string()))?;
            }
            Connection::open(path)?
        };
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        migrate_money_to_cents(&conn)?;
        let empty: i64 = conn.query_row("SELECT COUNT(*) FROM tenants", [], |r| r.get(0))?;
        if empty == 0 {
            seed(&conn)?;
            tracing::info!("database seeded with demo data for tenants 1 and 2");
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The ids of every tenant, read at once (at startup: the table of tenants the
    /// app admits).
    ///
    /// # Errors
    /// SQLite's error.
    pub fn tenant_ids(&self) -> Result<std::collections::HashSet<i64>, DbError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stmt = conn.prepare("SELECT id FROM tenants")?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Adds a tenant with one category, one unit and a user who logs in with
    /// `password` (for demos and the end-to-end suite's many tenants). The app
    /// admits the tenants it finds at startup.
    ///
    /// # Errors
    /// SQLite's error (a taken id or username among them).
    pub fn add_tenant(
        &self,
        id: i64,
        name: &str,
        username: &str,
        password: &str,
    ) -> Result<(), DbError> {
        let hash = hash_password(password)?;
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        conn.execute(
            "INSERT INTO tenants (id, name) VALUES (?1, ?2)",
            params![id, name],
        )?;
        conn.execute(
            "INSERT INTO categories (tenant_id, name) VALUES (?1, 'General')",
            params![id],
        )?;
        conn.execute(
            "INSERT INTO uom (tenant_id, name) VALUES (?1, 'unit')",
            params![id],
        )?;
        conn.execute(
            "INSERT INTO users (tenant_id, username, password_hash) VALUES (?1, ?2, ?3)",
            params![id, username, hash],
        )?;
        Ok(())
    }

    /// Whether the database answers a trivial query (for readiness probes), in a
    /// blocking task like every query.
    pub async fn ping(&self) -> bool {
        self.with(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .is_ok()
    }

    /// Runs `f` on the connection in a blocking task.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// The balance series of `tenant` between two days (inclusive): sales and
    /// payments per period, and the running balance (sales not yet paid).
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn balance(
        &self,
        tenant: i64,
        from: NaiveDate,
        to: NaiveDate,
        granularity: Granularity,
    ) -> Result<Vec<BalancePoint>, DbError> {
        let (from, to) = (from.to_string(), to.to_string());
        let fmt = granularity.format();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT period, SUM(sales), SUM(payments) FROM (
                   SELECT strftime(?1, sold_on) AS period,
                          CAST(quantity AS INTEGER) * unit_price_cents AS sales, 0 AS payments
                     FROM sales WHERE tenant_id = ?2 AND sold_on BETWEEN ?3 AND ?4
                   UNION ALL
                   SELECT strftime(?1, paid_on), 0, amount_cents
                     FROM payments WHERE tenant_id = ?2 AND paid_on BETWEEN ?3 AND ?4)
                 GROUP BY period ORDER BY period",
            )?;
            let rows = stmt.query_map(params![fmt, tenant, from, to], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut running = Money::default();
            let mut out = Vec::new();
            for row in rows {
                let (period, sales, payments) = row?;
                let (sales, payments) = (Money::from_cents(sales), Money::from_cents(payments));
                running = running + sales - payments;
                out.push(BalancePoint {
                    period,
                    sales,
                    payments,
                    balance: running,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The tenant's products.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn products(&self, tenant: i64) -> Result<Vec<Product>, DbError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, name, category_id, uom_id, price_cents FROM products WHERE tenant_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([tenant], product_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// One product of the tenant.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn product(&self, tenant: i64, id: i64) -> Result<Option<Product>, DbError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT id, name, category_id, uom_id, price_cents FROM products WHERE tenant_id = ?1 AND id = ?2",
                [tenant, id],
                product_row,
            )
            .optional()?)
        })
        .await
    }

    /// Creates (`id` None) or updates a product; `None` when updating a missing one.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn save_product(
        &self,
        tenant: i64,
        id: Option<i64>,
        p: ProductInput,
    ) -> Result<Option<Product>, DbError> {
        self.with(move |c| {
            let id = match id {
                None => {
                    c.execute(
                        "INSERT INTO products (tenant_id, name, category_id, uom_id, price_cents) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![tenant, p.name, p.category_id, p.uom_id, p.price.cents()],
                    )?;
                    c.last_insert_rowid()
                }
                Some(id) => {
                    let n = c.execute(
                        "UPDATE products SET name = ?3, category_id = ?4, uom_id = ?5, price_cents = ?6 WHERE tenant_id = ?1 AND id = ?2",
                        params![tenant, id, p.name, p.category_id, p.uom_id, p.price.cents()],
                    )?;
                    if n == 0 {
                        return Ok(None);
                    }
                    id
                }
            };
            Ok(Some(Product {
                id,
                name: p.name,
                category_id: p.category_id,
                uom_id: p.uom_id,
                price: p.price,
            }))
        })
        .await
    }

    /// Deletes a product; false when it did not exist.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn delete_product(&self, tenant: i64, id: i64) -> Result<bool, DbError> {
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM products WHERE tenant_id = ?1 AND id = ?2",
                [tenant, id],
            )? > 0)
        })
        .await
    }

    /// The tenant's rows of `table` (`categories` or `uom`).
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn named(&self, tenant: i64, table: NamedTable) -> Result<Vec<Named>, DbError> {
        self.with(move |c| {
            let sql = format!(
                "SELECT id, name FROM {} WHERE tenant_id = ?1 ORDER BY id",
                table.name()
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([tenant], |r| {
                Ok(Named {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Adds a row to `table`.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn add_named(
        &self,
        tenant: i64,
        table: NamedTable,
        name: String,
    ) -> Result<Named, DbError> {
        self.with(move |c| {
            let sql = format!(
                "INSERT INTO {} (tenant_id, name) VALUES (?1, ?2)",
                table.name()
            );
            c.execute(&sql, params![tenant, name])?;
            Ok(Named {
                id: c.last_insert_rowid(),
                name,
            })
        })
        .await
    }

    /// Records a sale today; `None` when the product is not the tenant's.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn add_sale(
        &self,
        tenant: i64,
        product_id: i64,
        quantity: i64,
        unit_price: Money,
    ) -> Result<Option<i64>, DbError> {
        self.with(move |c| {
            let known: Option<i64> = c
                .query_row(
                    "SELECT id FROM products WHERE tenant_id = ?1 AND id = ?2",
                    [tenant, product_id],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_none() {
                return Ok(None);
            }
            c.execute(
                "INSERT INTO sales (tenant_id, product_id, quantity, unit_price_cents, sold_on) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant, product_id, quantity, unit_price.cents(), Utc::now().date_naive().to_string()],
            )?;
            Ok(Some(c.last_insert_rowid()))
        })
        .await
    }

    /// Records a payment today.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn add_payment(
        &self,
        tenant: i64,
        amount: Money,
        method: String,
    ) -> Result<i64, DbError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO payments (tenant_id, amount_cents, method, paid_on) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, amount.cents(), method, Utc::now().date_naive().to_string()],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Checks a user's password; returns the user's tenant when it matches.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn verify_user(
        &self,
        username: String,
        password: String,
    ) -> Result<Option<i64>, DbError> {
        self.with(move |c| {
            let row: Option<(i64, String)> = c
                .query_row(
                    "SELECT tenant_id, password_hash FROM users WHERE username = ?1",
                    [&username],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(row.and_then(|(tenant, hash)| {
                let parsed = PasswordHash::new(&hash).ok()?;
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .ok()
                    .map(|()| tenant)
            }))
        })
        .await
    }

    /// The daily report of a tenant: today's totals, stored as a row.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn record_report(
        &self,
        tenant: i64,
        path: String,
        totals: serde_json::Value,
    ) -> Result<i64, DbError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO reports (tenant_id, created_at, path, totals) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, Utc::now().to_rfc3339(), path, totals.to_string()],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Reports recorded for a tenant.
    ///
    /// # Errors
    /// SQLite's error.
    pub async fn report_count(&self, tenant: i64) -> Result<i64, DbError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM reports WHERE tenant_id = ?1",
                [tenant],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

/// Tables of named rows.
#[derive(Debug, Clone, Copy)]
pub enum NamedTable {
    /// Product categories.
    Categories,
    /// Units of measure.
    Uom,
}

impl NamedTable {
    fn name(self) -> &'static str {
        match self {
            Self::Categories => "categories",
            Self::Uom => "uom",
        }
    }
}

fn product_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: r.get(0)?,
        name: r.get(1)?,
        category_id: r.get(2)?,
        uom_id: r.get(3)?,
        price: Money::from_cents(r.get(4)?),
    })
}

/// Databases made before money was kept in cents (`REAL` prices, unit prices and
/// amounts) get cent columns in their place, once. Quantities were whole numbers
/// already and keep their column (of `REAL` affinity there: queries cast it).
fn migrate_money_to_cents(c: &Connection) -> Result<(), DbError> {
    let old: i64 = c.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('products') WHERE name = 'price'",
        [],
        |r| r.get(0),
    )?;
    if old == 0 {
        return Ok(());
    }
    c.execute_batch(
        "BEGIN;
         ALTER TABLE products ADD COLUMN price_cents INTEGER NOT NULL DEFAULT 0;
         UPDATE products SET price_cents = CAST(ROUND(price * 100) AS INTEGER);
         ALTER TABLE products DROP COLUMN price;
         ALTER TABLE sales ADD COLUMN unit_price_cents INTEGER NOT NULL DEFAULT 0;
         UPDATE sales SET unit_price_cents = CAST(ROUND(unit_price * 100) AS INTEGER),
                          quantity = ROUND(quantity);
         ALTER TABLE sales DROP COLUMN unit_price;
         ALTER TABLE payments ADD COLUMN amount_cents INTEGER NOT NULL DEFAULT 0;
         UPDATE payments SET amount_cents = CAST(ROUND(amount * 100) AS INTEGER);
         ALTER TABLE payments DROP COLUMN amount;
         COMMIT;",
    )?;
    tracing::info!("database migrated: money is now kept in integer cents");
    Ok(())
}

fn hash_password(password: &str) -> Result<String, DbError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DbError::Hash(e.to_string()))
}

/// Demo data: tenants 1 and 2, each with categories, units, products, about four
/// months of daily sales and weekly payments, and a user.
fn seed(c: &Connection) -> Result<(), DbError> {
    let today = Utc::now().date_naive();
    for (tenant, name, user) in [
        (1i64, "Ferretería Norte", "alice"),
        (2, "Almacén Sur", "bob"),
    ] {
        c.execute(
            "INSERT INTO tenants (id, name) VALUES (?1, ?2)",
            params![tenant, name],
        )?;
        let mut cats = Vec::new();
        for cat in ["Tools", "Paint", "Garden"] {
            c.execute(
                "INSERT INTO categories (tenant_id, name) VALUES (?1, ?2)",
                params![tenant, cat],
            )?;
            cats.push(c.last_insert_rowid());
        }
        let mut units = Vec::new();
        for u in ["unit", "kg", "litre"] {
            c.execute(
                "INSERT INTO uom (tenant_id, name) VALUES (?1, ?2)",
                params![tenant, u],
            )?;
            units.push(c.last_insert_rowid());
        }
        let mut products = Vec::new();
        for (i, (p, cents)) in [
            ("Hammer", 1250),
            ("Screwdriver set", 1990),
            ("White paint 4L", 2400),
            ("Seeds", 320),
            ("Hose 20m", 3100),
        ]
        .into_iter()
        .enumerate()
        {
            // Tenant 2's prices are 10% higher, to the cent.
            let price: i64 = cents * (10 + tenant - 1) / 10;
            c.execute(
                "INSERT INTO products (tenant_id, name, category_id, uom_id, price_cents) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant, p, cats[i % cats.len()], units[i % units.len()], price],
            )?;
            products.push((c.last_insert_rowid(), price));
        }
        for day in 0..120i64 {
            let date = (today - Duration::days(day)).to_string();
            // A deterministic spread of sales per day.
            for k in 0..((day * 7 + tenant) % 4 + 1) {
                let (pid, price) = products[usize::try_from((day + k + tenant) % 5).unwrap_or(0)];
                let qty = (day + k) % 5 + 1;
                c.execute(
                    "INSERT INTO sales (tenant_id, product_id, quantity, unit_price_cents, sold_on) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![tenant, pid, qty, price, date],
                )?;
            }
            if day % 7 == 0 {
                c.execute(
                    "INSERT INTO payments (tenant_id, amount_cents, method, paid_on) VALUES (?1, ?2, ?3, ?4)",
                    params![tenant, 15_000 + (day % 3) * 4_000, if day % 2 == 0 { "card" } else { "transfer" }, date],
                )?;
            }
        }
        c.execute(
            "INSERT INTO users (tenant_id, username, password_hash) VALUES (?1, ?2, ?3)",
            params![tenant, user, hash_password(user)?],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;

    /// A database of the release before money moved to cents opens with its
    /// amounts in cents, to the cent, and works as a new one.
    #[test]
    fn an_old_database_is_migrated_to_cents() {
        let path = std::env::temp_dir().join(format!("stock-migrate-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
                 CREATE TABLE products (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, name TEXT NOT NULL,
                   category_id INTEGER NOT NULL, uom_id INTEGER NOT NULL, price REAL NOT NULL);
                 CREATE TABLE sales (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, product_id INTEGER NOT NULL,
                   quantity REAL NOT NULL, unit_price REAL NOT NULL, sold_on TEXT NOT NULL);
                 CREATE TABLE payments (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, amount REAL NOT NULL,
                   method TEXT NOT NULL, paid_on TEXT NOT NULL);
                 INSERT INTO tenants VALUES (2, 'Sur');
                 INSERT INTO products VALUES (1, 2, 'Hammer', 1, 1, 13.750000000000002);
                 INSERT INTO sales VALUES (1, 2, 1, 3.0, 13.750000000000002, '2026-11-01');
                 INSERT INTO payments VALUES (1, 2, 0.1, 'card', '2026-11-02');
                 INSERT INTO payments VALUES (2, 2, 0.2, 'card', '2026-11-03');",
            )
            .unwrap();
        }
        let db = Db::open(path.to_str().unwrap()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let products = db.products(2).await.unwrap();
            assert_eq!(products[0].price, Money::from_cents(1375));
            assert_eq!(serde_json::to_string(&products[0].price).unwrap(), "13.75");
            let from = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
            let to = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
            let series = db.balance(2, from, to, Granularity::Monthly).await.unwrap();
            assert_eq!(series[0].sales, Money::from_cents(4125));
            assert_eq!(series[0].payments, Money::from_cents(30));
            assert_eq!(series[0].balance, Money::from_cents(4095));
            db.add_sale(2, 1, 1, Money::from_cents(5)).await.unwrap();
        });
        drop(db);
        let _ = std::fs::remove_file(&path);
    }
}
